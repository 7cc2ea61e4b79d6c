/* The hosts of a job started from one command: mlrun -H LIST or
 * --hostfile FILE (Open MPI's format). */
#ifndef MLRT_LAUNCHER_HOSTS_H
#define MLRT_LAUNCHER_HOSTS_H

#include <stddef.h>

#define HOST_NAME_MAX_LEN 128

typedef struct host_entry {
	char name[HOST_NAME_MAX_LEN];
	int slots; /* workers to start there */
} host_entry;

/* "host1:4,host2,host3:2": a host without a count gets default_slots; a
 * host named twice gets the sum.  0, or -1 with a message in err. */
int hosts_parse_list(const char *list, int default_slots, host_entry **hosts, int *n,
                     char *err, size_t cap);

/* A hostfile: one host per line, "host [slots=N] [max_slots=M]", '#'
 * comments and blank lines ignored.  0, or -1 with a message naming the
 * file and line in err. */
int hosts_parse_file(const char *path, int default_slots, host_entry **hosts, int *n,
                     char *err, size_t cap);

/* This host's name in a job: MLRT_HOSTNAME when set (tests run several
 * "hosts" on one machine; the head sets it for each agent), else the
 * machine's. */
void hosts_this_name(char *buf, size_t len);

#endif
