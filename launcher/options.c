/* mlrun's command line: getopt_long_only, so that mpirun's -np and
 * torchrun's --nproc-per-node both read naturally. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "mlrt_config.h"
#include "launcher/options.h"
#include "runtime/common.h"

enum {
	OPT_NP = 'n',
	OPT_HELP = 'h',
	OPT_VERBOSE = 'v',
	OPT_RESTART_POLICY = 256,
	OPT_MAX_RESTARTS,
	OPT_GRACE,
	OPT_TAG,
	OPT_NO_TAG,
	OPT_LOG_DIR,
	OPT_JOB_ID,
	OPT_NNODES,
	OPT_RDZV_TIMEOUT,
	OPT_RDZV_LAST_CALL,
	OPT_VERSION,
	OPT_BIND,
	OPT_SERVERS,
	OPT_PS_REPLICAS,
	OPT_PS_CKPT_DIR,
	OPT_PS_CKPT_INTERVAL,
	OPT_EVALUATOR,
	OPT_GPUS_PER_PROC,
	OPT_GPU_MEM,
	OPT_CUDA,
	OPT_RDZV_ENDPOINT,
	OPT_HOST = 'H',
	OPT_ENV = 'x',
	OPT_HOSTFILE = 300,
	OPT_RSH,
	OPT_RSH_FANOUT,
	OPT_HB_INTERVAL,
	OPT_HB_TIMEOUT,
	OPT_NODE_RANK,
	OPT_AGENT,
	OPT_RDZV_BACKEND,
};

static const struct option long_opts[] = {
	{"np", required_argument, NULL, OPT_NP},
	{"nproc-per-node", required_argument, NULL, OPT_NP},
	{"nnodes", required_argument, NULL, OPT_NNODES},
	{"restart-policy", required_argument, NULL, OPT_RESTART_POLICY},
	{"max-restarts", required_argument, NULL, OPT_MAX_RESTARTS},
	{"grace-period", required_argument, NULL, OPT_GRACE},
	{"tag-output", no_argument, NULL, OPT_TAG},
	{"no-tag-output", no_argument, NULL, OPT_NO_TAG},
	{"log-dir", required_argument, NULL, OPT_LOG_DIR},
	{"job-id", required_argument, NULL, OPT_JOB_ID},
	{"rdzv-timeout", required_argument, NULL, OPT_RDZV_TIMEOUT},
	{"rdzv-last-call", required_argument, NULL, OPT_RDZV_LAST_CALL},
	{"bind-to", required_argument, NULL, OPT_BIND},
	{"servers", required_argument, NULL, OPT_SERVERS},
	{"ps-replicas", required_argument, NULL, OPT_PS_REPLICAS},
	{"ps-ckpt-dir", required_argument, NULL, OPT_PS_CKPT_DIR},
	{"ps-ckpt-interval", required_argument, NULL, OPT_PS_CKPT_INTERVAL},
	{"evaluator", no_argument, NULL, OPT_EVALUATOR},
	{"gpus-per-proc", required_argument, NULL, OPT_GPUS_PER_PROC},
	{"gpu-mem", required_argument, NULL, OPT_GPU_MEM},
	{"cuda", required_argument, NULL, OPT_CUDA},
	{"rdzv-endpoint", required_argument, NULL, OPT_RDZV_ENDPOINT},
	{"host", required_argument, NULL, OPT_HOST},
	{"hostfile", required_argument, NULL, OPT_HOSTFILE},
	{"machinefile", required_argument, NULL, OPT_HOSTFILE},
	{"rsh", required_argument, NULL, OPT_RSH},
	{"rsh-fanout", required_argument, NULL, OPT_RSH_FANOUT},
	{"heartbeat-interval", required_argument, NULL, OPT_HB_INTERVAL},
	{"heartbeat-timeout", required_argument, NULL, OPT_HB_TIMEOUT},
	{"node-rank", required_argument, NULL, OPT_NODE_RANK},
	{"agent", no_argument, NULL, OPT_AGENT},
	{"rdzv-backend", required_argument, NULL, OPT_RDZV_BACKEND},
	{"verbose", no_argument, NULL, OPT_VERBOSE},
	{"help", no_argument, NULL, OPT_HELP},
	{"version", no_argument, NULL, OPT_VERSION},
	{NULL, 0, NULL, 0},
};

void mlrun_print_help(FILE *f)
{
	fputs(
	"usage: mlrun [options] [--] PROGRAM [ARGS...]\n"
	"       mlrun store [--host ADDR] [--port P]\n"
	"       mlrun ckpt ls|verify|inspect DIR [STEP]  (see mlrun ckpt --help)\n"
	"       mlrun devices [--json]                   this host's GPUs\n"
	"\n"
	"Start PROGRAM as a gang of workers that link libmlrt (or any program that\n"
	"reads torchrun's RANK/WORLD_SIZE/... variables), watch them, and restart\n"
	"the gang from its last checkpoint when a worker fails.\n"
	"\n"
	"Workers:\n"
	"  -np, --nproc-per-node N  workers to start on this host (default 1)\n"
	"  --job-id ID              job name, used in store keys (default mlrt-<pid>)\n"
	"  --servers S              also start S parameter servers (MLRT_ROLE=server)\n"
	"                           of PROGRAM, on the first host\n"
	"  --ps-replicas 0|1        keep a copy of each server's keys on the next\n"
	"                           server, which takes over when it dies (default 1\n"
	"                           with 2 or more servers)\n"
	"  --ps-ckpt-dir DIR        servers checkpoint their keys in DIR/server-<i>/\n"
	"                           and load them when (re)started\n"
	"  --ps-ckpt-interval SEC   between those checkpoints (default 30)\n"
	"  --evaluator              also start one evaluator (MLRT_ROLE=evaluator)\n"
	"                           that pulls parameters without pushing\n"
	"\n"
	"GPUs (checked on every host before anything starts):\n"
	"  --gpus-per-proc G        give each worker G GPUs of its own, by local rank\n"
	"                           (CUDA_VISIBLE_DEVICES)\n"
	"  --gpu-mem SIZE           each of them must have SIZE of memory (40GiB, 512MiB)\n"
	"  --cuda X.Y               the driver must support CUDA X.Y\n"
	"  --bind-to core|none      pin each worker to one CPU, in local rank order\n"
	"                           (default: core when the workers fit the CPUs\n"
	"                           mlrun may use, none when they would share)\n"
	"\n"
	"Failures:\n"
	"  --restart-policy P       on-failure | exit-code | never (default on-failure)\n"
	"                           exit-code: exit codes 1-127 are permanent failures,\n"
	"                           128 and up (signals) are retried\n"
	"  --max-restarts K         restarts allowed before giving up (default 0)\n"
	"  --grace-period SEC       from SIGTERM to SIGKILL when stopping workers\n"
	"                           (default 5)\n"
	"\n"
	"Several hosts, from one command (an agent per host through --rsh):\n"
	"  -H, --host LIST          hosts and their worker counts: host1:4,host2:4\n"
	"                           (a host without :N gets -np workers)\n"
	"  --hostfile FILE          Open MPI's format: 'host slots=N' per line, #\n"
	"                           comments\n"
	"  --rsh CMD                how to run a command on a host (default\n"
	"                           'ssh -o BatchMode=yes'); {host} in CMD is replaced\n"
	"                           by the host, else the host follows CMD; e.g.\n"
	"                           'ip netns exec {host}'\n"
	"  --rsh-fanout N           agents starting at once (default 32)\n"
	"  -x NAME[=VALUE]          pass this variable to every host (MLRT_*, FI_* and\n"
	"                           NCCL_* variables are passed anyway)\n"
	"\n"
	"Rendezvous and elasticity:\n"
	"  --nnodes MIN[:MAX]       hosts the gang needs (default 1; with -H, all the\n"
	"                           hosts listed); MIN:MAX is elastic: a lost host ends\n"
	"                           the generation and the survivors go on, a new host\n"
	"                           joins at the next generation\n"
	"  --rdzv-timeout SEC       deadline for the gang to form (default 60)\n"
	"  --rdzv-last-call SEC     wait for more agents once MIN joined (default 1)\n"
	"  --rdzv-endpoint H:P      torchrun style: start the same mlrun on each host;\n"
	"                           the one that can listen on H:P serves the job's\n"
	"                           store there, the others join it (give the same\n"
	"                           --job-id everywhere, or let it default from P).\n"
	"                           With -H: where the head serves the store\n"
	"  --rdzv-backend B         mlrt (default: mlrun serves the store) or etcd:\n"
	"                           the store is the etcd at --rdzv-endpoint\n"
	"                           (http://HOST:2379), which outlives any host;\n"
	"                           give a --job-id unique on that etcd\n"
	"  --node-rank N            this host's place in the rank order (default: by\n"
	"                           host name)\n"
	"  --heartbeat-interval SEC agents renew their heartbeat this often (0.5)\n"
	"  --heartbeat-timeout SEC  a host silent this long is lost (default 2)\n"
	"\n"
	"Output:\n"
	"  --tag-output             prefix each line with the worker's rank ([3]: ...);\n"
	"                           on by default when stdout is a terminal\n"
	"  --no-tag-output          never prefix\n"
	"  --log-dir DIR            also write each rank's output to DIR/rank-R.log\n"
	"  -v, --verbose            log what mlrun does (MLRT_LOG_LEVEL=info)\n"
	"  -h, --help               this text\n"
	"  --version                mlrun's version\n"
	"\n"
	"Workers get MLRT_RANK MLRT_WORLD_SIZE MLRT_LOCAL_RANK MLRT_LOCAL_SIZE\n"
	"MLRT_STORE MLRT_JOB_ID MLRT_GENERATION MLRT_RESTART_COUNT and torchrun's\n"
	"RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT.\n"
	"\n"
	"Exit status: 0 when every worker exited 0; the failing worker's exit code\n"
	"(128+signal when killed) when the job failed; 2 for bad usage.\n",
	f);
}

static int bad(FILE *err, const char *what, const char *value, const char *want)
{
	fprintf(err, "mlrun: invalid %s '%s': %s (see mlrun --help)\n", what, value, want);
	return 2;
}

/* Seconds, possibly fractional, to milliseconds in [0, max_s]. */
/* "40GiB", "512MiB", "80GB", "1.5TiB", "1048576": bytes. */
static int parse_bytes(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		double mult;
	} units[] = {
		{"", 1},        {"B", 1},          {"KiB", 1024.0},     {"MiB", 1048576.0},
		{"GiB", 1073741824.0}, {"TiB", 1099511627776.0}, {"KB", 1e3}, {"MB", 1e6},
		{"GB", 1e9},    {"TB", 1e12},
	};
	char *end;
	double v = strtod(s, &end);

	if (end == s || !(v >= 0) || v > 1e15)
		return -1;
	for (size_t i = 0; i < MLRTI_ARRAY_LEN(units); i++)
		if (strcmp(end, units[i].unit) == 0) {
			*out = (uint64_t)(v * units[i].mult);
			return 0;
		}
	return -1;
}

/* "12.2" -> 12020 (CUDA's encoding). */
static int parse_version(const char *s, int *out)
{
	int major, minor, n = 0;

	if (sscanf(s, "%d.%d%n", &major, &minor, &n) != 2 || s[n] != '\0' || major < 1 ||
	    major > 99 || minor < 0 || minor > 9)
		return -1;
	*out = major * 1000 + minor * 10;
	return 0;
}

static int parse_seconds(const char *s, double max_s, int *ms)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end != '\0' || !(v >= 0) || v > max_s)
		return -1;
	*ms = (int)(v * 1000.0 + 0.5);
	return 0;
}

static int parse_nnodes(const char *s, int *min, int *max)
{
	int64_t a, b;
	char buf[64];
	char *colon;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	colon = strchr(buf, ':');
	if (colon != NULL)
		*colon = '\0';
	if (mlrti_parse_int(buf, 1, 100000, &a) != MLRT_OK)
		return -1;
	b = a;
	if (colon != NULL && mlrti_parse_int(colon + 1, a, 100000, &b) != MLRT_OK)
		return -1;
	*min = (int)a;
	*max = (int)b;
	return 0;
}

/* Whether a head passes option c on to its agents: all but the ones that
 * say where and how many, which it sets per host. */
static int passed_on(int c)
{
	switch (c) {
	case OPT_NP: case OPT_NNODES: case OPT_JOB_ID: case OPT_RDZV_ENDPOINT: case OPT_HOST:
	case OPT_HOSTFILE: case OPT_RSH: case OPT_RSH_FANOUT: case OPT_ENV: case OPT_NODE_RANK:
	case OPT_AGENT: case OPT_HELP: case OPT_VERSION: case ':': case '?':
		return 0;
	default:
		return 1;
	}
}

void mlrun_free_options(mlrun_opts *o)
{
	free(o->pass);
	free(o->env_fwd);
	o->pass = NULL;
	o->env_fwd = NULL;
}

static int parse(int argc, char **argv, mlrun_opts *o, FILE *err)
{
	int64_t v;
	int c, npass = 0;

	memset(o, 0, sizeof(*o));
	o->nproc = 1;
	o->ps_replicas = -1;
	o->ps_ckpt_ms = 30000;
	o->nnodes_min = o->nnodes_max = 1;
	o->policy = RESTART_ON_FAILURE;
	o->grace_ms = 5000;
	o->tag_output = -1;
	o->rdzv_timeout_ms = 60000;
	o->rdzv_last_call_ms = 1000;
	o->bind = -1;
	o->hb_interval_ms = 500;
	o->hb_timeout_ms = 2000;
	o->node_rank = -1;
	o->rsh = "ssh -o BatchMode=yes";
	o->rsh_fanout = 32;
	o->pass = calloc((size_t)argc + 1, sizeof(*o->pass));
	o->env_fwd = calloc((size_t)argc + 1, sizeof(*o->env_fwd));
	if (o->pass == NULL || o->env_fwd == NULL) {
		fprintf(err, "mlrun: out of memory\n");
		return 2;
	}

	optind = 1;
	opterr = 0;
	/* "+": stop at the first non-option, which is the program. */
	for (int before = optind; (c = getopt_long_only(argc, argv, "+:n:hvH:x:", long_opts, NULL)) != -1;
	     before = optind) {
		if (passed_on(c))
			for (int i = before; i < optind; i++)
				o->pass[npass++] = argv[i];
		switch (c) {
		case OPT_NP:
			if (mlrti_parse_int(optarg, 1, 65536, &v) != MLRT_OK)
				return bad(err, "worker count", optarg, "want an integer from 1 to 65536");
			o->nproc = (int)v;
			o->nproc_given = 1;
			break;
		case OPT_NNODES:
			if (parse_nnodes(optarg, &o->nnodes_min, &o->nnodes_max) != 0)
				return bad(err, "--nnodes", optarg, "want N or MIN:MAX with 1 <= MIN <= MAX");
			o->nnodes_given = 1;
			break;
		case OPT_HOST:
			o->hosts = optarg;
			break;
		case OPT_HOSTFILE:
			o->hostfile = optarg;
			break;
		case OPT_RSH:
			if (optarg[0] == '\0')
				return bad(err, "--rsh", optarg, "want a command such as 'ssh -o BatchMode=yes'");
			o->rsh = optarg;
			break;
		case OPT_RSH_FANOUT:
			if (mlrti_parse_int(optarg, 1, 4096, &v) != MLRT_OK)
				return bad(err, "--rsh-fanout", optarg, "want a count from 1 to 4096");
			o->rsh_fanout = (int)v;
			break;
		case OPT_ENV:
			if (optarg[0] == '\0' || optarg[0] == '=')
				return bad(err, "-x", optarg, "want NAME or NAME=VALUE");
			o->env_fwd[o->nenv_fwd++] = optarg;
			break;
		case OPT_HB_INTERVAL:
			if (parse_seconds(optarg, 3600, &o->hb_interval_ms) != 0 || o->hb_interval_ms < 10)
				return bad(err, "--heartbeat-interval", optarg, "want seconds from 0.01 to 3600");
			break;
		case OPT_HB_TIMEOUT:
			if (parse_seconds(optarg, 86400, &o->hb_timeout_ms) != 0 || o->hb_timeout_ms < 10)
				return bad(err, "--heartbeat-timeout", optarg, "want seconds from 0.01 to 86400");
			break;
		case OPT_NODE_RANK:
			if (mlrti_parse_int(optarg, 0, 1000000, &v) != MLRT_OK)
				return bad(err, "--node-rank", optarg, "want an integer >= 0");
			o->node_rank = (int)v;
			break;
		case OPT_AGENT:
			o->agent = 1;
			break;
		case OPT_RESTART_POLICY:
			if (strcmp(optarg, "on-failure") == 0)
				o->policy = RESTART_ON_FAILURE;
			else if (strcmp(optarg, "exit-code") == 0)
				o->policy = RESTART_EXIT_CODE;
			else if (strcmp(optarg, "never") == 0)
				o->policy = RESTART_NEVER;
			else
				return bad(err, "--restart-policy", optarg,
				           "want on-failure, exit-code or never");
			break;
		case OPT_MAX_RESTARTS:
			if (mlrti_parse_int(optarg, 0, 1000000, &v) != MLRT_OK)
				return bad(err, "--max-restarts", optarg, "want an integer >= 0");
			o->max_restarts = (int)v;
			break;
		case OPT_GRACE:
			if (parse_seconds(optarg, 3600, &o->grace_ms) != 0)
				return bad(err, "--grace-period", optarg, "want seconds from 0 to 3600");
			break;
		case OPT_RDZV_TIMEOUT:
			if (parse_seconds(optarg, 86400, &o->rdzv_timeout_ms) != 0)
				return bad(err, "--rdzv-timeout", optarg, "want seconds from 0 to 86400");
			break;
		case OPT_RDZV_LAST_CALL:
			if (parse_seconds(optarg, 3600, &o->rdzv_last_call_ms) != 0)
				return bad(err, "--rdzv-last-call", optarg, "want seconds from 0 to 3600");
			break;
		case OPT_TAG:
			o->tag_output = 1;
			break;
		case OPT_NO_TAG:
			o->tag_output = 0;
			break;
		case OPT_LOG_DIR:
			o->log_dir = optarg;
			break;
		case OPT_JOB_ID:
			if (optarg[0] == '\0' || strlen(optarg) > 100 || strchr(optarg, '/') != NULL)
				return bad(err, "--job-id", optarg,
				           "want 1 to 100 characters without '/'");
			o->job_id = optarg;
			break;
		case OPT_SERVERS:
			if (mlrti_parse_int(optarg, 0, 1024, &v) != MLRT_OK)
				return bad(err, "--servers", optarg, "want a count from 0 to 1024");
			o->servers = (int)v;
			break;
		case OPT_PS_REPLICAS:
			if (mlrti_parse_int(optarg, 0, 1, &v) != MLRT_OK)
				return bad(err, "--ps-replicas", optarg, "want 0 or 1");
			o->ps_replicas = (int)v;
			break;
		case OPT_PS_CKPT_DIR:
			o->ps_ckpt_dir = optarg;
			break;
		case OPT_PS_CKPT_INTERVAL:
			if (parse_seconds(optarg, 86400, &o->ps_ckpt_ms) != 0 || o->ps_ckpt_ms == 0)
				return bad(err, "--ps-ckpt-interval", optarg,
				           "want seconds from 0.001 to 86400");
			break;
		case OPT_RDZV_ENDPOINT: {
			const char *scheme = strstr(optarg, "://"), *hp = scheme ? scheme + 3 : optarg;
			const char *colon = strrchr(hp, ':');
			int64_t port;

			if (colon == NULL || colon == hp ||
			    mlrti_parse_int(colon + 1, 1, 65535, &port) != MLRT_OK ||
			    (scheme != NULL && strncmp(optarg, "tcp://", 6) != 0 &&
			     strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "etcd://", 7) != 0))
				return bad(err, "--rdzv-endpoint", optarg,
				           "want HOST:PORT (http://HOST:PORT for etcd)");
			o->rdzv_endpoint = optarg;
			o->rdzv_hostport = hp;
			break;
		}
		case OPT_RDZV_BACKEND:
			if (strcmp(optarg, "etcd") == 0 || strcmp(optarg, "etcd-v2") == 0)
				o->etcd = 1;
			else if (strcmp(optarg, "mlrt") == 0 || strcmp(optarg, "c10d") == 0)
				o->etcd = 0;
			else
				return bad(err, "--rdzv-backend", optarg, "want mlrt or etcd");
			break;
		case OPT_GPUS_PER_PROC:
			if (mlrti_parse_int(optarg, 0, 64, &v) != MLRT_OK)
				return bad(err, "--gpus-per-proc", optarg, "want a count from 0 to 64");
			o->gpus_per_proc = (int)v;
			break;
		case OPT_GPU_MEM:
			if (parse_bytes(optarg, &o->gpu_mem) != 0)
				return bad(err, "--gpu-mem", optarg,
				           "want a size such as 40GiB, 512MiB or 80GB");
			break;
		case OPT_CUDA:
			if (parse_version(optarg, &o->cuda_version) != 0)
				return bad(err, "--cuda", optarg, "want a CUDA version such as 12.2");
			break;
		case OPT_EVALUATOR:
			o->evaluator = 1;
			break;
		case OPT_BIND:
			if (strcmp(optarg, "core") == 0)
				o->bind = 1;
			else if (strcmp(optarg, "none") == 0)
				o->bind = 0;
			else
				return bad(err, "--bind-to", optarg, "want core or none");
			break;
		case OPT_VERBOSE:
			o->verbose = 1;
			break;
		case OPT_HELP:
			mlrun_print_help(stdout);
			return 1;
		case OPT_VERSION:
			printf("mlrun (mlrt) %s\n", MLRT_VERSION);
			return 1;
		case ':':
			fprintf(err, "mlrun: option '%s' needs a value (see mlrun --help)\n",
			        argv[optind - 1]);
			return 2;
		default:
			if (optopt != 0 && optopt < 256)
				fprintf(err, "mlrun: unknown option '-%c' (see mlrun --help)\n", optopt);
			else
				fprintf(err, "mlrun: unknown option '%s' (see mlrun --help)\n",
				        argv[optind - 1]);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(err, "mlrun: no program to run (usage: mlrun [options] -- PROGRAM [ARGS...])\n");
		return 2;
	}
	if (o->evaluator && o->servers == 0) {
		fprintf(err, "mlrun: --evaluator needs parameter servers (--servers S)\n");
		return 2;
	}
	if (o->etcd && o->rdzv_endpoint == NULL) {
		fprintf(err, "mlrun: --rdzv-backend etcd needs --rdzv-endpoint http://HOST:PORT\n");
		return 2;
	}
	if (o->etcd && o->job_id == NULL && !mlrun_is_head(o)) {
		fprintf(err, "mlrun: --rdzv-backend etcd needs a --job-id, the same on every host "
		        "and unique on that etcd\n");
		return 2;
	}
	if (o->rdzv_endpoint != NULL)
		snprintf(o->store_url, sizeof(o->store_url), "%s://%s", o->etcd ? "etcd" : "tcp",
		         o->rdzv_hostport);
	if (o->hosts != NULL && o->hostfile != NULL) {
		fprintf(err, "mlrun: give -H or --hostfile, not both\n");
		return 2;
	}
	if (o->hb_timeout_ms <= o->hb_interval_ms) {
		fprintf(err, "mlrun: --heartbeat-timeout (%.3g s) must be longer than "
		        "--heartbeat-interval (%.3g s)\n", o->hb_timeout_ms / 1000.0,
		        o->hb_interval_ms / 1000.0);
		return 2;
	}
	o->argv = argv + optind;
	return 0;
}

int mlrun_parse_options(int argc, char **argv, mlrun_opts *o, FILE *err)
{
	int rc = parse(argc, argv, o, err);

	if (rc != 0)
		mlrun_free_options(o);
	return rc;
}
