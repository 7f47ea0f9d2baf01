# ctest fuzz-api-run: libFuzzer for a bounded time on a scratch copy of the
# committed corpus (which stays untouched).  In: FUZZER SCRATCH CORPUS
# REGRESSIONS SECONDS SEED.
file(REMOVE_RECURSE ${SCRATCH})
file(MAKE_DIRECTORY ${SCRATCH}/corpus ${SCRATCH}/artifacts)
file(GLOB _seeds LIST_DIRECTORIES false ${CORPUS}/* ${REGRESSIONS}/*) # not regressions/open/
if(_seeds)
	file(COPY ${_seeds} DESTINATION ${SCRATCH}/corpus)
endif()
execute_process(
	COMMAND ${FUZZER} -seed=${SEED} -max_total_time=${SECONDS} -timeout=20 -rss_limit_mb=2048
		-print_final_stats=1 -artifact_prefix=${SCRATCH}/artifacts/ ${SCRATCH}/corpus
	RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
	message(FATAL_ERROR "fuzz-api exited ${rc}; the input is in ${SCRATCH}/artifacts")
endif()
