/* The floor of the readiness benchmark: the time from a fork of this process to the
 * exec'd child's first instruction, as `stamp` reports it; one line per try, in
 * nanoseconds. Usage: spawn-floor STAMP TRIES DIR */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int tries = atoi(argv[2]);
    char path[4096];
    for (int i = 0; i < tries; i++) {
        snprintf(path, sizeof path, "%s/floor-%d", argv[3], i);
        setenv("STAMP_FILE", path, 1);
        unsetenv("NOTIFY_SOCKET");
        long long before = now();
        pid_t pid = fork();
        if (pid == 0) {
            execl(argv[1], argv[1], (char *)NULL);
            _exit(127);
        }
        for (;;) {
            FILE *f = fopen(path, "r");
            long long at;
            if (f != NULL && fscanf(f, "%lld", &at) == 1) {
                fclose(f);
                printf("%lld\n", at - before);
                break;
            }
            if (f != NULL)
                fclose(f);
            usleep(200);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return 0;
}
