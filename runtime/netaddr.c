/* Choosing the address this host is reached at. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/common.h"
#include "runtime/netaddr.h"

/* The first IPv4 address that is up on ifname, or (ifname NULL) on any
 * interface that is not loopback. */
static int first_addr(const char *ifname, char *buf, size_t cap)
{
	struct ifaddrs *ifs, *i;
	int rc = MLRT_ERR_NOT_FOUND;

	if (getifaddrs(&ifs) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "cannot list network interfaces: %s", strerror(errno));
		return MLRT_ERR_IO;
	}
	for (i = ifs; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
		    !(i->ifa_flags & IFF_UP))
			continue;
		if (ifname != NULL ? strcmp(i->ifa_name, ifname) == 0
		                   : !(i->ifa_flags & IFF_LOOPBACK)) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf,
			          (socklen_t)cap);
			rc = MLRT_OK;
			break;
		}
	}
	freeifaddrs(ifs);
	return rc;
}

int mlrti_ifname_addr(const char *ifname, char *buf, size_t cap)
{
	return first_addr(ifname, buf, cap);
}

int mlrti_route_addr(const char *host, char *buf, size_t cap)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *ai = NULL;
	struct sockaddr_in me;
	socklen_t len = sizeof(me);
	int fd, rc = MLRT_ERR_NOT_FOUND;

	if (getaddrinfo(host, "9", &hints, &ai) != 0)
		return MLRT_ERR_NOT_FOUND;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	/* Connecting a datagram socket only picks the route. */
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
	    getsockname(fd, (struct sockaddr *)&me, &len) == 0) {
		inet_ntop(AF_INET, &me.sin_addr, buf, (socklen_t)cap);
		rc = MLRT_OK;
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return rc;
}

int mlrti_is_loopback(const char *host)
{
	struct in_addr a;

	if (strcmp(host, "localhost") == 0)
		return 1;
	return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

int mlrti_reachable_addr(const char *toward, char *buf, size_t cap)
{
	const char *want = getenv("MLRT_IFNAME");
	int rc;

	if (want != NULL && *want != '\0') {
		rc = first_addr(want, buf, cap);
		if (rc == MLRT_ERR_NOT_FOUND)
			mlrt_log(MLRT_LOG_ERROR, "MLRT_IFNAME=%s: no such interface with an IPv4 address "
			         "that is up on this host; name one that reaches the other hosts "
			         "(see 'ip -4 addr')", want);
		return rc;
	}
	/* Hosts that reach the store through loopback all run on this
	 * machine: loopback reaches them too. */
	if (toward != NULL && mlrti_is_loopback(toward)) {
		snprintf(buf, cap, "127.0.0.1");
		return MLRT_OK;
	}
	if (toward != NULL && mlrti_route_addr(toward, buf, cap) == MLRT_OK &&
	    !mlrti_is_loopback(buf))
		return MLRT_OK;
	rc = first_addr(NULL, buf, cap);
	if (rc == MLRT_ERR_NOT_FOUND)
		mlrt_log(MLRT_LOG_ERROR, "this host has no IPv4 address that is up besides loopback; "
		         "other hosts cannot reach it (set MLRT_IFNAME to the interface to use)");
	return rc;
}

int mlrti_endpoint_host(const char *endpoint, char *host, size_t cap)
{
	const char *p = strstr(endpoint, "://"), *colon;

	p = p != NULL ? p + 3 : endpoint;
	colon = strrchr(p, ':');
	if (colon == NULL || colon == p || (size_t)(colon - p) >= cap)
		return MLRT_ERR_INVALID;
	if (*p == '[' && colon[-1] == ']')
		snprintf(host, cap, "%.*s", (int)(colon - p - 2), p + 1);
	else
		snprintf(host, cap, "%.*s", (int)(colon - p), p);
	return MLRT_OK;
}
