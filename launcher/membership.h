/* Who is in the job, across generations (launcher/membership.c).
 *
 *   <job>/generation          the generation running now
 *   <job>/members             the last gang: "<gen> <host> <host>..."
 *   <job>/done                the job's exit status, once it is over
 *   <job>/g<gen>/joiners      hosts asking to join after gen (and joiner/<host>)
 *   <job>/g<gen>/lost/<host>  hosts seen lost in gen */
#ifndef MLRT_LAUNCHER_MEMBERSHIP_H
#define MLRT_LAUNCHER_MEMBERSHIP_H

#include <stdint.h>

#include "launcher/agent.h"
#include "runtime/rdzv.h"

/* Which generation this host joins.  A host that arrives while the job
 * runs (elastic scale-up, a host coming back, or one that missed a round)
 * asks to join and waits for the running generation to end.  Returns the
 * generation, -1 when the job has already finished, -2 on interrupt or
 * when the job is gone (a message printed). */
int64_t membership_admission(agent *a);

/* The job is over for every host (status: its exit status). */
void membership_done(agent *a, int status);

/* Remember generation r's hosts: the next round names them when missing. */
void membership_remember(agent *a, const mlrti_rdzv_result *r);

/* The first host of a generation logs how the gang changed. */
void membership_log(agent *a, int64_t gen, const mlrti_rdzv_result *r);

/* After generation gen ended: how many hosts will come to the next round
 * (its members less those marked lost, plus those asking to join; 0 when
 * unknown); *nlost gets how many were lost, and a->await the names of
 * the members still expected. */
int membership_expected_next(agent *a, int64_t gen, int *nlost);

#endif
