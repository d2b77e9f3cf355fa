# Thin wrapper over CMake. Every target sets up a fresh Debian 12 machine
# first (scripts/deps.sh installs what is missing; a quick no-op otherwise).
# The configure step (scripts/configure.sh) runs again whenever the build
# directory has no Makefile (e.g. after a failed configure) or CC,
# CMAKE_FLAGS or PREFIX are given with new values; values not given keep
# what the build directory was configured with.
BUILD   ?= build
PREFIX  ?= /usr/local
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
BENCH   ?=
CTEST_FLAGS ?=

FUZZ_TIME ?= 300

.PHONY: all deps configure test demo bench install clean format fuzz valgrind

# 1 when the variable was set on the command line or in the environment.
given = $(if $(filter command line environment environment override,$(origin $(1))),1,0)

all: deps configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@sh scripts/deps.sh

configure:
	@MP_CC='$(CC)' MP_CC_GIVEN=$(call given,CC) \
	 MP_FLAGS='$(CMAKE_FLAGS)' MP_FLAGS_GIVEN=$(call given,CMAKE_FLAGS) \
	 MP_PREFIX='$(PREFIX)' MP_PREFIX_GIVEN=$(call given,PREFIX) \
	 sh scripts/configure.sh $(BUILD)

test: deps all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300 $(CTEST_FLAGS)

# Every fuzz target for FUZZ_TIME seconds (clang, build-fuzz/).
fuzz:
	.ci/fuzz $(FUZZ_TIME)

# valgrind memcheck over the suites it fits (see .ci/valgrind).
valgrind: all
	.ci/valgrind $(BUILD)

demo: deps all
	@sh scripts/demo.sh $(BUILD)

bench: deps all
	python3 bench/run.py --build $(BUILD) $(if $(BENCH),--family $(BENCH),)

# Installs under PREFIX; for /usr and /usr/local it also runs ldconfig (as
# root) so the shared library is found at once. DESTDIR stages a package.
install: all
	cmake --install $(BUILD) --prefix $(PREFIX)

format:
	clang-format -i include/*.h include/mproc/*.h src/*.c src/*.h tests/*.c tests/*.h \
	  examples/*.c bench/*.c bench/*.h $$(find tools -name '*.[ch]')

clean:
	rm -rf $(BUILD)
