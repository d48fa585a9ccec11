/* Run one command and print what it cost: `<wall ns> <user+sys us> <peak RSS KiB>`.
 *
 * Used by scripts/lib/measure.py (scripts/bench.sh). It exists because a child's peak RSS, as
 * wait4 reports it, is never less than the memory of the process it was forked from: Linux
 * carries the high-water mark across exec. Started from Python that floor is ~13 MiB, more than
 * the tools being measured; from this small program it is ~1 MiB.
 *
 * Usage: runone <output file> <command> [args...]   (the command's stdout and stderr go to the
 * output file). Exits with the command's exit status, or 128 + the signal that ended it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: runone <output file> <command> [args...]\n");
        return 2;
    }
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        perror(argv[1]);
        return 2;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        dup2(out, 1);
        dup2(out, 2);
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) < 0) {
        perror("wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    long long wall = (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec);
    long long cpu = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000LL +
                    usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    printf("%lld %lld %ld\n", wall, cpu, usage.ru_maxrss);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}
