/* Unit tests for mlrt_strerror (runtime/status.c). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <mlrt/status.h>

/* Every known status has its own non-empty text. */
static void test_known_distinct(void **state)
{
	(void)state;
	for (int s = MLRT_OK; s >= MLRT_ERR_NOSPACE; s--) {
		const char *text = mlrt_strerror(s);

		assert_non_null(text);
		assert_true(text[0] != '\0');
		assert_string_not_equal(text, "unknown status");
		for (int t = s + 1; t <= MLRT_OK; t++)
			assert_string_not_equal(text, mlrt_strerror(t));
	}
	assert_string_equal(mlrt_strerror(MLRT_OK), "success");
}

static void test_unknown(void **state)
{
	const int unknown[] = { -9999, 5, 1, INT_MIN, INT_MAX };

	(void)state;
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		assert_string_equal(mlrt_strerror(unknown[i]), "unknown status");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_distinct),
		cmocka_unit_test(test_unknown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
