# The libraries libsoftmmu links against, as imported targets with stable
# names (softmmu_deps::*).  Used by the project's own CMakeLists.txt and,
# installed beside softmmuConfig.cmake, by find_package(softmmu): the
# exported softmmu::softmmu_static names these targets in its link interface.
#
# In:  SOFTMMU_WITH_JEMALLOC (0 or 1; 0 in AddressSanitizer builds)
#      SOFTMMU_DEPS_CONSUMER (set by softmmuConfig.cmake: a missing
#      dependency falls back to -l<name> instead of stopping)
# Out: Threads::Threads, softmmu_deps::{urcu_qsbr,urcu,urcu_bp,jemalloc},
#      SOFTMMU_DEPENDENCY_TARGETS, SOFTMMU_DEP_<name>_FROM_PKGCONFIG

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
find_package(PkgConfig QUIET)

set(_smmu_required REQUIRED)
if(SOFTMMU_DEPS_CONSUMER)
	set(_smmu_required)
endif()

# _smmu_dep(<name> <pkg-config module> <library name>)
macro(_smmu_dep name module libname)
	if(NOT TARGET softmmu_deps::${name})
		add_library(softmmu_deps::${name} INTERFACE IMPORTED)
		string(TOUPPER "SMMU_DEP_${name}" _smmu_prefix)
		set(_smmu_found FALSE)
		if(PKG_CONFIG_FOUND)
			pkg_check_modules(${_smmu_prefix} QUIET IMPORTED_TARGET ${module})
			if(${_smmu_prefix}_FOUND)
				set_property(TARGET softmmu_deps::${name} PROPERTY
					INTERFACE_LINK_LIBRARIES PkgConfig::${_smmu_prefix})
				set(_smmu_found TRUE)
			endif()
		endif()
		if(NOT _smmu_found)
			find_library(${_smmu_prefix}_LIBRARY NAMES ${libname} ${_smmu_required})
			if(${_smmu_prefix}_LIBRARY)
				set_property(TARGET softmmu_deps::${name} PROPERTY
					INTERFACE_LINK_LIBRARIES ${${_smmu_prefix}_LIBRARY})
			else()
				set_property(TARGET softmmu_deps::${name} PROPERTY INTERFACE_LINK_LIBRARIES ${libname})
			endif()
		endif()
		set(SOFTMMU_DEP_${name}_FROM_PKGCONFIG ${_smmu_found})
	endif()
endmacro()

_smmu_dep(urcu_qsbr liburcu-qsbr urcu-qsbr)
_smmu_dep(urcu liburcu urcu)
_smmu_dep(urcu_bp liburcu-bp urcu-bp) # MMU notifier lists (any thread may read them)
set(SOFTMMU_DEPENDENCY_TARGETS Threads::Threads softmmu_deps::urcu_qsbr softmmu_deps::urcu softmmu_deps::urcu_bp)

if(SOFTMMU_WITH_JEMALLOC)
	_smmu_dep(jemalloc jemalloc jemalloc)
	list(APPEND SOFTMMU_DEPENDENCY_TARGETS softmmu_deps::jemalloc)
endif()
