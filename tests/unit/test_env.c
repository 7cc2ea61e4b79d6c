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
	"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT",
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
