/* The node program of the readiness benchmark. It writes the time it started at
 * (CLOCK_REALTIME, nanoseconds) to the file STAMP_FILE names, if set; then, if
 * NOTIFY_SOCKET is set, it says READY=1 on it (systemd's protocol) and writes the time
 * it did so to READY_FILE; then it waits for a signal. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void stamp(const char *variable, long long at)
{
    const char *path = getenv(variable);
    if (path == NULL)
        return;
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return;
    fprintf(f, "%lld\n", at);
    fclose(f);
}

int main(void)
{
    stamp("STAMP_FILE", now());
    const char *socket_name = getenv("NOTIFY_SOCKET");
    if (socket_name != NULL && socket_name[0] != '\0') {
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        size_t len = strlen(socket_name);
        if (len >= sizeof addr.sun_path)
            return 1;
        memcpy(addr.sun_path, socket_name, len);
        if (addr.sun_path[0] == '@')
            addr.sun_path[0] = '\0';
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        long long at = now();
        sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&addr,
               offsetof(struct sockaddr_un, sun_path) + len);
        stamp("READY_FILE", at);
        close(fd);
    }
    for (;;)
        pause();
}
