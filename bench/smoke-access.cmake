# ctest bench-access-smoke: run bench-access on tiny sizes with --json and
# check the report's shape, never its timings:
#   - every library case has a number under "ratios";
#   - the naive TLB's case is under "context_ratios" and not under "ratios"
#     (it is not the library's figure);
#   - the case records say which is the context case and what it measured.
# The bench itself dies when any side's sum differs from the raw loop's.
# Usage: cmake -DBENCH=path/to/bench-access -P smoke-access.cmake

if(NOT BENCH)
	message(FATAL_ERROR "BENCH is not set")
endif()
execute_process(COMMAND ${BENCH} --json --quick --scale 5 --big 4m RESULT_VARIABLE rc OUTPUT_VARIABLE out
	ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
	message(FATAL_ERROR "bench-access exited ${rc}:\n${err}")
endif()

function(expect_number) # the JSON path, in ${out}
	string(JSON v ERROR_VARIABLE e GET "${out}" ${ARGN})
	if(e OR NOT v MATCHES "^[0-9.eE+-]+$" OR v LESS_EQUAL 0)
		message(FATAL_ERROR "${ARGN}: expected a positive number, got '${v}' ${e}")
	endif()
endfunction()

foreach(c hit_random_vs_raw hit_chase_vs_raw big_random_vs_raw hit_random_vs_naive_tlb)
	expect_number(ratios ${c})
	string(JSON ctx ERROR_VARIABLE e GET "${out}" cases ${c} context)
	if(NOT e)
		message(FATAL_ERROR "${c} is marked as a context case")
	endif()
endforeach()
expect_number(context_ratios naive_tlb_random_vs_raw)
string(JSON v ERROR_VARIABLE e GET "${out}" ratios naive_tlb_random_vs_raw)
if(NOT e)
	message(FATAL_ERROR "the naive TLB's case is under \"ratios\" (${v}): it is not the library's figure")
endif()
string(JSON ctx GET "${out}" cases naive_tlb_random_vs_raw context)
string(JSON subject GET "${out}" cases naive_tlb_random_vs_raw subject)
if(NOT ctx STREQUAL "ON" OR NOT subject MATCHES "naive")
	message(FATAL_ERROR "naive_tlb_random_vs_raw: context '${ctx}', subject '${subject}'")
endif()
expect_number(cases naive_tlb_random_vs_raw ours_ns_median)
expect_number(cases naive_tlb_random_vs_raw peer_ns_median)
message(STATUS "bench-access report: ratios and context_ratios as expected")
