/* Identity bootstrap from each launcher's environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/env.h"

static const char *const all_vars[] = {
	"MLRT_RANK", "MLRT_WORLD_SIZE", "MLRT_LOCAL_RANK", "MLRT_LOCAL_SIZE", "MLRT_STORE",
	"MLRT_JOB_ID", "MLRT_GENERATION", "MLRT_RESTART_COUNT", "MLRT_STORE_PORT", "RANK",
	"WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
	"TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_RANK",
	"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
	"OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "SLURM_PROCID", "SLURM_NTASKS",
	"SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
	"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "SLURM_STEPID",
	"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURMD_NODENAME",
};

static int clear_env(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(all_vars) / sizeof(all_vars[0]); i++)
		unsetenv(all_vars[i]);
	return 0;
}

static void test_no_launcher_is_world_of_one(void **state)
{
	mlrti_identity id;

	(void)state;
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.launcher, MLRT_LAUNCHER_NONE);
	assert_int_equal(id.rank, 0);
	assert_int_equal(id.size, 1);
	assert_int_equal(id.local_size, 1);
	assert_int_equal(id.store_mode, MLRTI_STORE_NONE);
}

static void test_mlrun(void **state)
{
	mlrti_identity id;

	(void)state;
	setenv("MLRT_RANK", "5", 1);
	setenv("MLRT_WORLD_SIZE", "8", 1);
	setenv("MLRT_LOCAL_RANK", "1", 1);
	setenv("MLRT_LOCAL_SIZE", "4", 1);
	setenv("MLRT_STORE", "tcp://10.0.0.1:29400", 1);
	setenv("MLRT_JOB_ID", "job7", 1);
	setenv("MLRT_GENERATION", "3", 1);
	setenv("MLRT_RESTART_COUNT", "2", 1);
	/* torchrun's names are set by mlrun too; mlrun's win. */
	setenv("RANK", "99", 1);
	setenv("WORLD_SIZE", "100", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.launcher, MLRT_LAUNCHER_MLRUN);
	assert_int_equal(id.rank, 5);
	assert_int_equal(id.size, 8);
	assert_int_equal(id.local_rank, 1);
	assert_int_equal(id.local_size, 4);
	assert_int_equal(id.generation, 3);
	assert_int_equal(id.restart_count, 2);
	assert_string_equal(id.job_id, "job7");
	assert_int_equal(id.store_mode, MLRTI_STORE_CONNECT);
	assert_string_equal(id.store_addr, "tcp://10.0.0.1:29400");
}

static void test_mlrun_bad_values(void **state)
{
	mlrti_identity id;

	(void)state;
	setenv("MLRT_RANK", "two", 1);
	setenv("MLRT_WORLD_SIZE", "4", 1);
	setenv("MLRT_STORE", "tcp://h:1", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("MLRT_RANK", "4", 1); /* rank >= size */
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("MLRT_RANK", "1", 1);
	unsetenv("MLRT_STORE"); /* several ranks need a store */
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("MLRT_STORE", "tcp://h:1", 1);
	unsetenv("MLRT_WORLD_SIZE");
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("MLRT_WORLD_SIZE", "4", 1);
	setenv("MLRT_GENERATION", "-1", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
}

static void test_torchrun(void **state)
{
	mlrti_identity id;

	(void)state;
	setenv("RANK", "3", 1);
	setenv("WORLD_SIZE", "4", 1);
	setenv("LOCAL_RANK", "1", 1);
	setenv("LOCAL_WORLD_SIZE", "2", 1);
	setenv("MASTER_ADDR", "node0", 1);
	setenv("MASTER_PORT", "29500", 1);
	setenv("TORCHELASTIC_RESTART_COUNT", "1", 1);
	setenv("TORCHELASTIC_RUN_ID", "rdzv42", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.launcher, MLRT_LAUNCHER_TORCHRUN);
	assert_int_equal(id.rank, 3);
	assert_int_equal(id.size, 4);
	assert_int_equal(id.local_rank, 1);
	assert_int_equal(id.local_size, 2);
	assert_int_equal(id.restart_count, 1);
	assert_string_equal(id.job_id, "rdzv42");
	assert_int_equal(id.store_mode, MLRTI_STORE_HOST);
	assert_string_equal(id.store_addr, "tcp://node0:29501");
	assert_string_equal(id.store_bind, "tcp://0.0.0.0:29501");
	setenv("MLRT_STORE_PORT", "4000", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_string_equal(id.store_addr, "tcp://node0:4000");
	setenv("MLRT_STORE", "tcp://elsewhere:5", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.store_mode, MLRTI_STORE_CONNECT);
	assert_string_equal(id.store_addr, "tcp://elsewhere:5");
}

static void test_torchrun_without_master(void **state)
{
	mlrti_identity id;

	(void)state;
	setenv("RANK", "0", 1);
	setenv("WORLD_SIZE", "2", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("MASTER_ADDR", "node0", 1);
	setenv("MASTER_PORT", "70000", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
}

static void test_open_mpi(void **state)
{
	mlrti_identity id;

	(void)state;
	setenv("OMPI_COMM_WORLD_RANK", "2", 1);
	setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
	setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
	setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
	setenv("OMPI_MCA_ess_base_jobid", "1234", 1);
	/* Without MPI in the build and without a master address: no store. */
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_env_identity(&id, 1), MLRT_OK);
	assert_int_equal(id.launcher, MLRT_LAUNCHER_MPI);
	assert_int_equal(id.rank, 2);
	assert_int_equal(id.size, 4);
	assert_int_equal(id.local_rank, 0);
	assert_int_equal(id.local_size, 2);
	assert_string_equal(id.job_id, "mpi-1234");
	assert_int_equal(id.store_mode, MLRTI_STORE_MPI);
	setenv("MASTER_ADDR", "127.0.0.1", 1);
	setenv("MASTER_PORT", "3000", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.store_mode, MLRTI_STORE_HOST);
	assert_string_equal(id.store_addr, "tcp://127.0.0.1:3001");
}

static void test_slurm(void **state)
{
	mlrti_identity id;

	(void)state;
	setenv("SLURM_PROCID", "5", 1);
	setenv("SLURM_NTASKS", "7", 1);
	setenv("SLURM_LOCALID", "1", 1);
	setenv("SLURM_NODEID", "2", 1);
	setenv("SLURM_STEP_TASKS_PER_NODE", "2(x2),3", 1);
	setenv("SLURM_JOB_ID", "77", 1);
	setenv("SLURM_STEP_ID", "0", 1);
	setenv("MASTER_ADDR", "node1", 1);
	setenv("MASTER_PORT", "29500", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.launcher, MLRT_LAUNCHER_SLURM);
	assert_int_equal(id.rank, 5);
	assert_int_equal(id.size, 7);
	assert_int_equal(id.local_rank, 1);
	assert_int_equal(id.local_size, 3);
	assert_string_equal(id.job_id, "slurm-77.0");
	setenv("SLURM_STEP_TASKS_PER_NODE", "2(x", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
}

static void test_slurm_tasks_per_node(void **state)
{
	(void)state;
	assert_int_equal(mlrti_slurm_tasks_on_node("4", 0), 4);
	assert_int_equal(mlrti_slurm_tasks_on_node("4", 1), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node("2(x3),1", 0), 2);
	assert_int_equal(mlrti_slurm_tasks_on_node("2(x3),1", 2), 2);
	assert_int_equal(mlrti_slurm_tasks_on_node("2(x3),1", 3), 1);
	assert_int_equal(mlrti_slurm_tasks_on_node("2(x3),1", 4), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node("1,5(x2)", 2), 5);
	assert_int_equal(mlrti_slurm_tasks_on_node("", 0), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node("x", 0), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node("2(y3)", 0), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node("2(x0)", 0), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node("2,,3", 1), -1);
	assert_int_equal(mlrti_slurm_tasks_on_node(NULL, 0), -1);
}

static void check_first_host(const char *list, const char *want)
{
	char host[64];

	assert_int_equal(mlrti_slurm_first_host(list, host, sizeof(host)), MLRT_OK);
	assert_string_equal(host, want);
}

static void check_bad_hostlist(const char *list)
{
	char host[64] = "junk";

	assert_int_equal(mlrti_slurm_first_host(list, host, sizeof(host)), MLRT_ERR_INVALID);
	assert_string_equal(host, "");
}

static void test_slurm_first_host(void **state)
{
	char small[6];

	(void)state;
	check_first_host("vm", "vm");
	check_first_host("node[01-03,7],gpu5", "node01");
	check_first_host("node[007]", "node007");
	check_first_host("node[7,01-03]", "node7");
	check_first_host("gpu5,node[01-03]", "gpu5");
	check_first_host("n-01.cluster,n-02", "n-01.cluster");
	check_first_host("rack[2-3]-node[09-12]", "rack2-node09");
	check_first_host("r[1-2]n[5,7]-ib,x1", "r1n5-ib");
	check_first_host("[3-4]x", "3x");
	check_bad_hostlist("");
	check_bad_hostlist(",node1");
	check_bad_hostlist("node[]");
	check_bad_hostlist("node[01-03");
	check_bad_hostlist("node[a-b]");
	check_bad_hostlist("node[1-]");
	check_bad_hostlist("node[1-2-3]");
	check_bad_hostlist("node[1,]");
	check_bad_hostlist("node]1");
	check_bad_hostlist("node 1");
	check_bad_hostlist(NULL);
	/* The name and its NUL must fit. */
	assert_int_equal(mlrti_slurm_first_host("node[01]", small, sizeof(small)), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_slurm_first_host("node[1]", small, sizeof(small)), MLRT_OK);
	assert_string_equal(small, "node1");
}

static void test_slurm_store_port_rule(void **state)
{
	(void)state;
	assert_int_equal(mlrti_slurm_store_port(0, 0), 20000);
	assert_int_equal(mlrti_slurm_store_port(77, 3), 20000 + (77 * 16 + 3) % 10000);
	assert_int_equal(mlrti_slurm_store_port(625, 0), 20000); /* 625 jobs apart: the same */
	assert_int_equal(mlrti_slurm_store_port(624, 15), 29999);
	assert_int_equal(mlrti_slurm_store_port(4294967295u, 4294967295u),
	                 20000 + (int)((4294967295ull * 16 + 4294967295ull) % 10000));
	/* Steps of one job get different ports. */
	for (int step = 1; step < 16; step++)
		assert_int_not_equal(mlrti_slurm_store_port(1234, 0),
		                     mlrti_slurm_store_port(1234, (uint64_t)step));
}

/* An srun step of 4 tasks on localhost[1-3]: "localhost" is what every
 * machine resolves, to 127.0.0.1. */
static void set_slurm_step(const char *rank)
{
	setenv("SLURM_PROCID", rank, 1);
	setenv("SLURM_NTASKS", "4", 1);
	setenv("SLURM_LOCALID", rank, 1);
	setenv("SLURM_NODEID", "0", 1);
	setenv("SLURM_STEP_TASKS_PER_NODE", "4", 1);
	setenv("SLURM_JOB_ID", "77", 1);
	setenv("SLURM_STEP_ID", "3", 1);
	setenv("SLURM_STEP_NODELIST", "localhost", 1);
	setenv("SLURM_JOB_NODELIST", "nohost[1-3],localhost", 1);
}

static void test_slurm_store_rule(void **state)
{
	mlrti_identity id;

	(void)state;
	set_slurm_step("2");
	/* With or without MPI in the build: Slurm's own rule. */
	for (int have_mpi = 0; have_mpi <= 1; have_mpi++) {
		assert_int_equal(mlrti_env_identity(&id, have_mpi), MLRT_OK);
		assert_int_equal(id.launcher, MLRT_LAUNCHER_SLURM);
		assert_int_equal(id.rank, 2);
		assert_int_equal(id.size, 4);
		assert_int_equal(id.store_mode, MLRTI_STORE_HOST);
		assert_string_equal(id.store_addr, "tcp://127.0.0.1:21235"); /* 77*16+3 */
		assert_string_equal(id.store_bind, "tcp://0.0.0.0:21235");
		assert_non_null(strstr(id.store_how, "SLURM_STEP_NODELIST"));
	}
	/* Rank 0 on the first node serves there. */
	set_slurm_step("0");
	setenv("SLURMD_NODENAME", "localhost", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_string_equal(id.store_bind, "tcp://0.0.0.0:21235");
	/* The old spelling of the step id. */
	unsetenv("SLURM_STEP_ID");
	setenv("SLURM_STEPID", "4", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_string_equal(id.store_addr, "tcp://127.0.0.1:21236");
	/* MLRT_STORE_PORT overrides the port, not the host. */
	setenv("MLRT_STORE_PORT", "4000", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_string_equal(id.store_addr, "tcp://127.0.0.1:4000");
	assert_string_equal(id.store_bind, "tcp://0.0.0.0:4000");
	setenv("MLRT_STORE_PORT", "70000", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	unsetenv("MLRT_STORE_PORT");
	/* MASTER_ADDR and MLRT_STORE still win. */
	setenv("MASTER_ADDR", "node9", 1);
	setenv("MASTER_PORT", "29500", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_string_equal(id.store_addr, "tcp://node9:29501");
	setenv("MLRT_STORE", "tcp://elsewhere:5", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.store_mode, MLRTI_STORE_CONNECT);
	assert_string_equal(id.store_addr, "tcp://elsewhere:5");
}

static void test_slurm_store_rule_job_nodelist(void **state)
{
	mlrti_identity id;

	(void)state;
	/* Without the step's list, the job's: its first node is
	 * "localhost" here. */
	set_slurm_step("1");
	setenv("SLURM_JOB_NODELIST", "localhost,nohost[1-3]", 1);
	unsetenv("SLURM_STEP_NODELIST");
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_string_equal(id.store_addr, "tcp://127.0.0.1:21235");
	assert_non_null(strstr(id.store_how, "SLURM_JOB_NODELIST"));
}

static void test_slurm_store_rule_errors(void **state)
{
	mlrti_identity id;

	(void)state;
	set_slurm_step("1");
	/* A world of one needs no store at all. */
	setenv("SLURM_NTASKS", "1", 1);
	setenv("SLURM_PROCID", "0", 1);
	setenv("SLURM_LOCALID", "0", 1);
	setenv("SLURM_STEP_TASKS_PER_NODE", "1", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
	assert_int_equal(id.store_mode, MLRTI_STORE_NONE);

	set_slurm_step("1");
	/* The batch script itself: no step id. */
	unsetenv("SLURM_STEP_ID");
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("SLURM_STEP_ID", "x", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("SLURM_STEP_ID", "3", 1);
	unsetenv("SLURM_JOB_ID");
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("SLURM_JOB_ID", "77", 1);
	unsetenv("SLURM_STEP_NODELIST");
	unsetenv("SLURM_JOB_NODELIST");
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	setenv("SLURM_STEP_NODELIST", "localhost[1-", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	/* Rank 0 placed off the first node: nobody would find its store. */
	set_slurm_step("0");
	setenv("SLURMD_NODENAME", "othernode", 1);
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_ERR_INVALID);
	/* Other ranks cannot tell where rank 0 is. */
	set_slurm_step("3");
	assert_int_equal(mlrti_env_identity(&id, 0), MLRT_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_no_launcher_is_world_of_one, clear_env),
		cmocka_unit_test_setup(test_mlrun, clear_env),
		cmocka_unit_test_setup(test_mlrun_bad_values, clear_env),
		cmocka_unit_test_setup(test_torchrun, clear_env),
		cmocka_unit_test_setup(test_torchrun_without_master, clear_env),
		cmocka_unit_test_setup(test_open_mpi, clear_env),
		cmocka_unit_test_setup(test_slurm, clear_env),
		cmocka_unit_test_setup(test_slurm_tasks_per_node, clear_env),
		cmocka_unit_test_setup(test_slurm_first_host, clear_env),
		cmocka_unit_test_setup(test_slurm_store_port_rule, clear_env),
		cmocka_unit_test_setup(test_slurm_store_rule, clear_env),
		cmocka_unit_test_setup(test_slurm_store_rule_job_nodelist, clear_env),
		cmocka_unit_test_setup(test_slurm_store_rule_errors, clear_env),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
