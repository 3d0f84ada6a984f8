/* Prints CLOCK_MONOTONIC in nanoseconds: built static into the bench's root, so a workload
 * times itself inside the jail, without the runner's start-up and teardown. */
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    printf("%lld\n", (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
    return 0;
}
