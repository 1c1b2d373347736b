/* The child program every supervisor in the benchmark runs: it waits for a signal and
 * does nothing else. If PAUSE_NOTIFY_FD is set (s6 with readiness notification), it
 * first writes a newline to that descriptor, as s6's notification-fd protocol asks. */
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
    const char *fd = getenv("PAUSE_NOTIFY_FD");
    if (fd != NULL) {
        int n = atoi(fd);
        (void)write(n, "\n", 1);
        close(n);
    }
    for (;;)
        pause();
}
