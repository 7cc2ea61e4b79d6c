/* Agents' heartbeats: while a generation runs, each host's agent keeps a
 * key alive under a lease in the store, and watches the others' keys.  A
 * host whose key vanishes (agent killed, link cut) is lost; losing the
 * store ourselves means this host has been cut off; hosts waiting to join
 * (elastic jobs below their maximum) ask for a new generation.
 *
 *   <job>/g<gen>/alive/<i>    member i's key, leased for the heartbeat timeout
 *   <job>/g<gen>/done/<i>     member i's workers all finished (it may stop beating)
 *   <job>/g<gen>/joiners      count of hosts waiting to join
 *   <job>/g<gen>/joiner/<h>   their names
 *   <job>/g<gen>/lost/<h>     hosts seen lost (by the heartbeats or the head)
 *   <job>/g<gen>/abort        why the generation ended (then keys vanish
 *                             without a loss: see agent_end_generation)
 *
 * The watching runs in a thread with its own store connection, so that a
 * store that stops answering never blocks the agent's loop. */
#ifndef MLRT_LAUNCHER_HEARTBEAT_H
#define MLRT_LAUNCHER_HEARTBEAT_H

#include <stddef.h>

#include <mlrt/store.h>

#include "runtime/rdzv.h"

typedef enum hb_event {
	HB_NONE,
	HB_MEMBER_LOST, /* another host stopped beating */
	HB_STORE_LOST,  /* we cannot reach the store, or our lease expired */
	HB_JOINERS,     /* hosts wait to join and the gang is below its maximum */
} hb_event;

typedef struct heartbeat heartbeat;

typedef struct heartbeat_opts {
	const char *store_addr;
	const char *prefix;   /* "<job>/g<gen>/" */
	const mlrti_rdzv_result *gang;
	int interval_ms;
	int timeout_ms;
	int watch_joiners;    /* the gang may grow */
} heartbeat_opts;

/* Put our key in place and start the thread.  0, or an mlrt_status. */
int heartbeat_start(const heartbeat_opts *o, heartbeat **out);

/* The first event seen (sticky), with a sentence about it in detail. */
hb_event heartbeat_event(heartbeat *hb, char *detail, size_t cap);

/* Mark host lost in the generation of key prefix "<job>/g<gen>/". */
void heartbeat_mark_lost(mlrt_store *st, const char *prefix, const char *host);

/* Stop the thread; finished: our workers all succeeded (mark it, so that
 * the others do not count us as lost once we stop beating).  NULL is fine. */
void heartbeat_stop(heartbeat *hb, int finished);

#endif
