/* SPDX-License-Identifier: MIT */
/*
 * fuzz-api-replay: run the fuzz-api harness (fuzz_api.c) over files, without
 * libFuzzer, so that the committed corpus and the regression inputs run as
 * an ordinary test in every build (plain, ThreadSanitizer, AddressSanitizer)
 * and with any compiler.
 *
 *   fuzz-api-replay PATH...   each PATH a file or a directory of files
 *                             (not recursive), run in name order
 *
 * A mismatch with the model aborts inside the harness, naming the
 * operation; each file's name is printed before it runs (unless
 * FUZZ_REPLAY_QUIET is set).  Exit status 0 when every
 * file ran, 1 when a path could not be read, 2 on usage.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The file being run, for the watchdog's message. */
static const char *volatile current = "(none)";

/*
 * The RSS watchdog: a run of the harness needs a few MB (pools of at most
 * 160 frames); a library that allocates without bound (as with open bug 1
 * in fuzz_api.c) would otherwise take the machine down before it fails.
 * Above FUZZ_REPLAY_RSS_MB (default 1536) the replay aborts.
 */
static void *watchdog(void *arg)
{
	long limit_mb = *(long *)arg, page = sysconf(_SC_PAGESIZE);
	for (;;) {
		usleep(100 * 1000);
		FILE *f = fopen("/proc/self/statm", "r");
		long size, rss;
		if (!f)
			continue;
		int ok = fscanf(f, "%ld %ld", &size, &rss) == 2;
		fclose(f);
		if (ok && rss / 1024 * page / 1024 > limit_mb) {
			fprintf(stderr, "fuzz-api-replay: RSS %ld MB above %ld MB while running %s: aborting\n",
				rss / 1024 * page / 1024, limit_mb, current);
			abort();
		}
	}
	return NULL;
}

static int run_file(const char *path, int verbose)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return -1;
	}
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);
	for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
		n += got;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
	}
	fclose(f);
	if (!buf) {
		fprintf(stderr, "%s: out of memory\n", path);
		return -1;
	}
	if (verbose)
		fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
	current = path;
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, int verbose, size_t *count)
{
	DIR *d = opendir(dir);
	if (!d) {
		perror(dir);
		return -1;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				abort();
		}
		size_t len = strlen(dir) + strlen(e->d_name) + 2;
		names[n] = malloc(len);
		if (!names[n])
			abort();
		snprintf(names[n++], len, "%s/%s", dir, e->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof(*names), by_name);
	int err = 0;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(names[i], verbose))
				err = -1;
			else
				(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return err;
}

int main(int argc, char **argv)
{
	int verbose = getenv("FUZZ_REPLAY_QUIET") == NULL; /* name each file: a mismatch aborts */
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	static long limit_mb = 1536;
	if (getenv("FUZZ_REPLAY_RSS_MB"))
		limit_mb = atol(getenv("FUZZ_REPLAY_RSS_MB"));
	pthread_t t;
	if (pthread_create(&t, NULL, watchdog, &limit_mb) == 0)
		pthread_detach(t);
	size_t count = 0;
	int err = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st)) {
			perror(argv[i]);
			err = 1;
		} else if (S_ISDIR(st.st_mode)) {
			if (run_dir(argv[i], verbose, &count))
				err = 1;
		} else if (run_file(argv[i], verbose)) {
			err = 1;
		} else {
			count++;
		}
	}
	printf("fuzz-api-replay: %zu inputs replayed, all agree with the model\n", count);
	return err;
}
