/* hjfamilies: makes sockets of the given families through one ABI, for tests/test_families.py.
 *
 * usage: hjfamilies EXPECTED_HOSTNAME ABI CALL:FAMILY:TYPE...
 *   ABI: "64" (x86_64's syscall), "int80" (i386's socket(2), nr 359, through int 0x80),
 *   "int80s" (i386's socketcall(2), nr 102, arguments in memory), "x32" (x32's socket(2)).
 *   CALL: "socket" or "socketpair". Prints "CALL:FAMILY:TYPE=ok" or "=<errno name>" per
 *   argument, and closes what it made.
 *
 * Refuses to do anything (exit 99) outside a hyjail jail: the hostname must be the one the
 * test gave the jail, and the root must be one hyjail built (/etc/hyjail-root). Built static
 * and non-PIE, so every buffer passed through int 0x80 lies below 4 GiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

static unsigned int args32[4];
static int pair32[2];

static long int80(long nr, long a, long b)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b) : "memory");
    return (int)ret;
}

static long int80_4(long nr, long a, long b, long c, long d)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d)
                     : "memory");
    return (int)ret;
}

static long native(long nr, long a, long b, long c, long d)
{
    long ret = syscall(nr, a, b, c, d);
    return ret < 0 ? -errno : ret;
}

/* One socket(2) or socketpair(2): the new fd (or 0 for a pair), or -errno. */
static long make(const char *abi, int pair, int family, int type)
{
    int fds[2] = {-1, -1};
    long ret;
    if (strcmp(abi, "64") == 0)
        ret = pair ? native(53, family, type, 0, (long)fds) : native(41, family, type, 0, 0);
    else if (strcmp(abi, "x32") == 0)
        ret = pair ? native(0x40000000 | 53, family, type, 0, (long)fds)
                   : native(0x40000000 | 41, family, type, 0, 0);
    else if (strcmp(abi, "int80") == 0)
        ret = pair ? int80_4(360, family, type, 0, (long)pair32)
                   : int80_4(359, family, type, 0, 0);
    else if (strcmp(abi, "int80s") == 0) {
        args32[0] = family;
        args32[1] = type;
        args32[2] = 0;
        args32[3] = (unsigned int)(long)pair32;
        ret = int80(102, pair ? 8 : 1, (long)args32);
    } else
        return -EINVAL;
    if (ret >= 0 && !pair)
        close((int)ret);
    if (ret >= 0 && pair) {
        int *made = strcmp(abi, "int80") == 0 || strcmp(abi, "int80s") == 0 ? pair32 : fds;
        close(made[0]);
        close(made[1]);
        ret = 0;
    }
    return ret;
}

int main(int argc, char **argv)
{
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    if (argc < 4 || strcmp(host, argv[1]) != 0 || access("/etc/hyjail-root", F_OK) != 0) {
        fprintf(stderr, "hjfamilies: refusing to run outside the jail it was given\n");
        return 99;
    }
    for (int k = 3; k < argc; k++) {
        char call[16] = {0};
        int family, type;
        if (sscanf(argv[k], "%15[^:]:%d:%d", call, &family, &type) != 3) {
            printf("%s=EINVAL\n", argv[k]);
            continue;
        }
        long ret = make(argv[2], strcmp(call, "socketpair") == 0, family, type);
        printf("%s=%s\n", argv[k], ret < 0 ? strerrorname_np((int)-ret) : "ok");
    }
    return 0;
}
