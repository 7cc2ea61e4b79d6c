/* Which of this host's IPv4 addresses other hosts should use to reach it.
 * Not installed.  Addresses are written as dotted quads into buf. */
#ifndef MLRT_RUNTIME_NETADDR_H
#define MLRT_RUNTIME_NETADDR_H

#include <stddef.h>

#define MLRTI_ADDR_MAX 64

/* The IPv4 address of interface ifname (up).  MLRT_ERR_NOT_FOUND when it
 * has none. */
int mlrti_ifname_addr(const char *ifname, char *buf, size_t cap);

/* The source address the kernel would use to reach host (a name or an
 * address; no packet is sent).  MLRT_ERR_NOT_FOUND when host does not
 * resolve or has no route. */
int mlrti_route_addr(const char *host, char *buf, size_t cap);

/* Whether host is this machine's loopback ("localhost", 127.x.x.x). */
int mlrti_is_loopback(const char *host);

/* The address that peers on other hosts should use for this one:
 * MLRT_IFNAME's when set; else loopback when toward (the store's host, may
 * be NULL) is loopback (every host is this machine then); else the source
 * address of the route towards it; else the first interface that is up
 * and not loopback.  Errors are logged, saying what to set. */
int mlrti_reachable_addr(const char *toward, char *buf, size_t cap);

/* Split "tcp://HOST:PORT", "etcd://HOST:PORT" or "HOST:PORT" into its host
 * part (brackets of an IPv6 literal removed). */
int mlrti_endpoint_host(const char *endpoint, char *host, size_t cap);

#endif
