/* hjprobe: attempts what a jailed process must not do (SPEC R1-R5, R7), and some of what it
 * must, with raw system calls. The escape battery (`hyjail check`) and the tests run it.
 *
 * usage: hjprobe EXPECTED_HOSTNAME ABI OP [OP...]
 *   ABI is "64" (the native syscall instruction: x86_64, or i386 when built with -m32),
 *   "int80" (the i386 ABI through int 0x80 from the 64-bit build) or "int80s" (int80, socket
 *   calls through socketcall). Prints one line per OP: "OP=ok", "OP=ok:<detail>" or
 *   "OP=<errno name>"; what a result means is the caller's to judge.
 *
 * It refuses to do anything (exit 99) unless it runs inside a hyjail jail: the hostname must be
 * the one the caller gave the jail, and either the root is one hyjail built (it has
 * /etc/hyjail-root) or pid 1 is the jail's init. Built static and
 * non-PIE, so every buffer passed through int 0x80 (all static) lies below 4 GiB. Every
 * attempt is harmless where it succeeds: signal 0 or SIGCONT, netlink requests on an interface
 * that does not exist, mounts and writes inside the jail's own tree.
 *
 * Installed setuid root as "hjsuid", it only prints its effective uid (the setuid-regain
 * attempt runs it as nobody).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#define REFUSED 99
#define P(x) ((long)(x))

static int int80;        /* the 64-bit build making its calls through int 0x80 */
static int by_socketcall; /* int80s: socket calls through socketcall(2) */

/* ---- making a call in the chosen ABI: the result, or -errno ------------------------------ */

#ifndef __i386__
/* An i386 call through int 0x80 from this 64-bit process; the sixth argument goes in ebp,
 * which the compiler may be using: saved around the call, below the red zone. */
static long sys32_6(long nr, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long sixth __asm__("r12") = f;
    __asm__ volatile("sub $128, %%rsp\n\t"
                     "push %%rbp\n\t"
                     "mov %%r12, %%rbp\n\t"
                     "int $0x80\n\t"
                     "pop %%rbp\n\t"
                     "add $128, %%rsp"
                     : "=a"(ret)
                     : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e), "r"(sixth)
                     : "memory", "r8", "r9", "r10", "r11");
    return (int)ret;
}
#endif

/* A call in the chosen ABI, with six arguments: its result, or -errno. */
static long call6(long nr64, long nr32, long a, long b, long c, long d, long e, long f)
{
#ifdef __i386__
    (void)nr64;
    long ret = syscall(nr32, a, b, c, d, e, f);
#else
    if (int80)
        return sys32_6(nr32, a, b, c, d, e, f);
    long ret = syscall(nr64, a, b, c, d, e, f);
#endif
    return ret < 0 ? -errno : ret;
}

static long call(long nr64, long nr32, long a, long b, long c, long d, long e)
{
    return call6(nr64, nr32, a, b, c, d, e, 0);
}

/* socketcall(2) numbers, for int80s */
enum { SC_SOCKET = 1, SC_BIND = 2, SC_CONNECT = 3, SC_SENDTO = 11, SC_SETSOCKOPT = 14,
       SC_SENDMSG = 16 };
static unsigned int sc_args[6];

static long sock_call(long nr64, long nr32, int sc, int n, long a, long b, long c, long d,
                      long e)
{
    if (int80 && by_socketcall) {
        long v[5] = {a, b, c, d, e};
        for (int i = 0; i < n && i < 5; i++)
            sc_args[i] = (unsigned int)v[i];
        return call(102, 102, sc, P(sc_args), 0, 0, 0);
    }
    return call(nr64, nr32, a, b, c, d, e);
}

static long sys_socket(int family, int type, int protocol)
{
    return sock_call(41, 359, SC_SOCKET, 3, family, type, protocol, 0, 0);
}

static long sys_bind(int fd, const void *address, int length)
{
    return sock_call(49, 361, SC_BIND, 3, fd, P(address), length, 0, 0);
}

static long sys_connect(int fd, const void *address, int length)
{
    return sock_call(42, 362, SC_CONNECT, 3, fd, P(address), length, 0, 0);
}

static long sys_setsockopt(int fd, int level, int name, const void *value, int length)
{
    return sock_call(54, 366, SC_SETSOCKOPT, 5, fd, level, name, P(value), length);
}

static long sys_open(const char *path, int flags)
{
    return call(2, 5, P(path), flags, 0, 0, 0);
}

/* ---- the jail check --------------------------------------------------------------------- */

static int inside_jail(const char *expected)
{
    char host[256] = {0}, comm[64] = {0};
    gethostname(host, sizeof host - 1);
    if (strcmp(host, expected) != 0)
        return 0;
    if (access("/etc/hyjail-root", F_OK) == 0) /* a root hyjail built */
        return 1;
    FILE *f = fopen("/proc/1/comm", "r");
    if (!f)
        return 0;
    if (!fgets(comm, sizeof comm, f))
        comm[0] = 0;
    fclose(f);
    return strcmp(comm, "hyjail-init\n") == 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static const char *result(long ret)
{
    return ret < 0 ? strerrorname_np((int)-ret) : "ok";
}

static void say(const char *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *op, const char *fmt, ...)
{
    va_list args;
    printf("%s=", op);
    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);
    printf("\n");
    fflush(stdout);
}

/* "ok:<first line, printable>" of an fd just opened, or its errno. */
static void say_read(const char *op, long fd)
{
    static char text[64];
    if (fd < 0) {
        say(op, "%s", result(fd));
        return;
    }
    long n = read((int)fd, text, sizeof text - 1);
    close((int)fd);
    text[n > 0 ? n : 0] = 0;
    for (char *c = text; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            *c = *c == '\n' ? 0 : '.';
    say(op, "ok:%s", text);
}

static char path_buf[PATH_MAX];

static const char *static_path(const char *path)
{
    snprintf(path_buf, sizeof path_buf, "%s", path);
    return path_buf;
}

/* ---- R1: the root ------------------------------------------------------------------------ */

static void climb(void)
{
    for (int i = 0; i < 64; i++)
        call(80, 12, P(".."), 0, 0, 0, 0); /* chdir("..") */
}

static void dotdot(const char *op, const char *name)
{
    call(80, 12, P("/"), 0, 0, 0, 0);
    climb();
    say_read(op, sys_open(static_path(name), O_RDONLY));
}

static void chroot_twice(const char *op, const char *name)
{
    mkdir("/tmp/hjchroot", 0700);
    long ret = call(161, 61, P("/tmp/hjchroot"), 0, 0, 0, 0);
    if (ret < 0) {
        say(op, "%s", result(ret));
        return;
    }
    climb();
    call(161, 61, P("."), 0, 0, 0, 0);
    say_read(op, sys_open(static_path(name), O_RDONLY));
}

static void leaked_fds(const char *op)
{
    char list[256] = "";
    for (int fd = 3; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0 && strlen(list) < sizeof list - 8)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", *list ? "," : "",
                     fd);
    if (*list)
        say(op, "leaked:%s", list);
    else
        say(op, "ok");
}

static struct { unsigned int bytes; int type; unsigned char h[128]; } handle;

/* open_by_handle_at(the root, HANDLE): a handle made on the host for a file outside. */
static void by_handle(const char *op, const char *spec)
{
    int type;
    char hex[260];
    if (sscanf(spec, "%d:%259s", &type, hex) != 2 || strlen(hex) / 2 > sizeof handle.h) {
        say(op, "EINVAL");
        return;
    }
    handle.type = type;
    handle.bytes = (unsigned int)(strlen(hex) / 2);
    for (unsigned int i = 0; i < handle.bytes; i++)
        sscanf(hex + 2 * i, "%2hhx", &handle.h[i]);
    int root = open("/", O_RDONLY | O_DIRECTORY);
    say_read(op, call(304, 342, root, P(&handle), O_RDONLY, 0, 0));
    close(root);
}

/* Sit in DIR until told (a line on stdin) that the host moved it out of the root; climb. */
static void sit_in(const char *op, const char *spec)
{
    char dir[PATH_MAX], name[PATH_MAX], line[16];
    if (sscanf(spec, "%[^:]:%s", dir, name) != 2 || chdir(dir) != 0) {
        say(op, "%s", errno ? strerrorname_np(errno) : "EINVAL");
        return;
    }
    say("sitting", "ready");
    if (read(0, line, sizeof line) <= 0) {
        say(op, "EPIPE");
        return;
    }
    climb();
    say_read(op, sys_open(static_path(name), O_RDONLY));
}

/* One thread flips a path between one inside and one outside; the other opens it. */
static char flip[PATH_MAX];
static const char *flip_inside, *flip_outside;
static volatile int flip_done;

static void *flipper_of_paths(void *arg)
{
    size_t in = strlen(flip_inside) + 1, out = strlen(flip_outside) + 1;
    while (!flip_done) {
        memcpy(flip, flip_outside, out);
        memcpy(flip, flip_inside, in);
    }
    return arg;
}

static void path_flip(const char *op, const char *spec)
{
    static char outside[PATH_MAX], token[64];
    int tries;
    if (sscanf(spec, "%[^:]:%63[^:]:%d", outside, token, &tries) != 3) {
        say(op, "EINVAL");
        return;
    }
    flip_inside = "/etc/hostname";
    flip_outside = outside;
    memcpy(flip, flip_inside, strlen(flip_inside) + 1);
    pthread_t thread;
    pthread_create(&thread, NULL, flipper_of_paths, NULL);
    long escaped = 0;
    char text[128];
    for (int i = 0; i < tries; i++) {
        long fd = sys_open(flip, O_RDONLY);
        if (fd < 0)
            continue;
        long n = read((int)fd, text, sizeof text - 1);
        close((int)fd);
        text[n > 0 ? n : 0] = 0;
        escaped += strstr(text, token) != NULL;
    }
    flip_done = 1;
    pthread_join(thread, NULL);
    if (escaped)
        say(op, "escaped:%ld", escaped);
    else
        say(op, "ok");
}

/* ---- R2: the hostname --------------------------------------------------------------------- */

static void nodename(const char *op)
{
    static struct utsname names;
    long ret = call(63, 122, P(&names), 0, 0, 0, 0);
    if (ret < 0)
        say(op, "%s", result(ret));
    else
        say(op, "%s", names.nodename);
}

/* ---- R3: addresses ------------------------------------------------------------------------ */

static struct sockaddr_in in4;
static struct sockaddr_in6 in6;

static int parse4(const char *ip, int port)
{
    in4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    return inet_pton(AF_INET, ip, &in4.sin_addr) == 1;
}

static int parse6(const char *ip, int port)
{
    in6 = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_port = htons(port)};
    return inet_pton(AF_INET6, ip, &in6.sin6_addr) == 1;
}

/* the local address of a socket (what a peer sees), or errno */
static void say_local(const char *op, int s, long ret)
{
    char text[64];
    struct sockaddr_storage local;
    socklen_t length = sizeof local;
    if (ret < 0 || getsockname(s, (struct sockaddr *)&local, &length) != 0) {
        say(op, "%s", result(ret < 0 ? ret : -errno));
        return;
    }
    if (local.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&local)->sin6_addr, text, sizeof text);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&local)->sin_addr, text, sizeof text);
    say(op, "%s", text);
}

/* bind a UDP socket (v4 or v6) to IP, port 0: prints the address bound, as the kernel has it */
static void bind_to(const char *op, const char *ip, int v6)
{
    if (!(v6 ? parse6(ip, 0) : parse4(ip, 0))) {
        say(op, "EINVAL");
        return;
    }
    long s = sys_socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        say(op, "%s", result(s));
        return;
    }
    long ret = v6 ? sys_bind((int)s, &in6, sizeof in6) : sys_bind((int)s, &in4, sizeof in4);
    say_local(op, (int)s, ret);
    close((int)s);
}

/* connect TCP to IP:PORT: prints the local address the peer sees */
static void connect_to(const char *op, const char *spec, int v6)
{
    char ip[64];
    int port;
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof ip) {
        say(op, "EINVAL");
        return;
    }
    memcpy(ip, spec, colon - spec);
    ip[colon - spec] = 0;
    port = atoi(colon + 1);
    if (!(v6 ? parse6(ip, port) : parse4(ip, port))) {
        say(op, "EINVAL");
        return;
    }
    long s = sys_socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        say(op, "%s", result(s));
        return;
    }
    long ret = v6 ? sys_connect((int)s, &in6, sizeof in6) : sys_connect((int)s, &in4, sizeof in4);
    say_local(op, (int)s, ret);
    close((int)s);
}

/* SO_BINDTODEVICE to IF, then connect TCP to IP:PORT: the local address the peer sees. */
static void device_connect(const char *op, const char *spec)
{
    static char device[IFNAMSIZ];
    char ip[64];
    int port;
    if (sscanf(spec, "%15[^:]:%63[^:]:%d", device, ip, &port) != 3 || !parse4(ip, port)) {
        say(op, "EINVAL");
        return;
    }
    long s = sys_socket(AF_INET, SOCK_STREAM, 0);
    long ret = s < 0 ? s : sys_setsockopt((int)s, SOL_SOCKET, SO_BINDTODEVICE, device,
                                          (int)strlen(device) + 1);
    if (ret >= 0)
        ret = sys_connect((int)s, &in4, sizeof in4);
    say_local(op, (int)s, ret);
    if (s >= 0)
        close((int)s);
}

/* One UDP datagram ("udp\n") to IP:PORT by sendto, sendmsg, or sendmsg with an IP_PKTINFO
 * naming SOURCE as the source: the listener on the host tells where it came from. */
static void send_udp(const char *op, const char *spec, int how)
{
    enum { SENDTO, SENDMSG, PKTINFO };
    static char payload[] = "udp\n", source[64];
    static struct iovec iov;
    static struct msghdr msg;
    static unsigned int iov32[2];
    static struct { unsigned int name, namelen, iov, iovlen, control, controllen, flags; } msg32;
    static union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(struct in_pktinfo))]; } cm;
    static struct { unsigned int len; int level, type; struct in_pktinfo info; } cm32;
    char ip[64];
    int port;
    if (how == PKTINFO ? sscanf(spec, "%63[^:]:%63[^:]:%d", source, ip, &port) != 3
                       : sscanf(spec, "%63[^:]:%d", ip, &port) != 2) {
        say(op, "EINVAL");
        return;
    }
    if (!parse4(ip, port)) {
        say(op, "EINVAL");
        return;
    }
    struct in_pktinfo info = {0};
    inet_pton(AF_INET, source, &info.ipi_spec_dst);
    iov = (struct iovec){payload, 4};
    msg = (struct msghdr){.msg_name = &in4, .msg_namelen = sizeof in4, .msg_iov = &iov,
                          .msg_iovlen = 1};
    iov32[0] = (unsigned int)P(payload), iov32[1] = 4;
    msg32 = (typeof(msg32)){(unsigned int)P(&in4), sizeof in4, (unsigned int)P(iov32), 1, 0,
                            0, 0};
    if (how == PKTINFO) {
        struct cmsghdr *c = &cm.align;
        c->cmsg_len = CMSG_LEN(sizeof info);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        memcpy(CMSG_DATA(c), &info, sizeof info);
        msg.msg_control = cm.bytes, msg.msg_controllen = sizeof cm.bytes;
        cm32 = (typeof(cm32)){sizeof cm32, IPPROTO_IP, IP_PKTINFO, info};
        msg32.control = (unsigned int)P(&cm32), msg32.controllen = sizeof cm32;
    }
    long s = sys_socket(AF_INET, SOCK_DGRAM, 0), ret = s;
    if (s >= 0 && how == SENDTO) {
        if (int80 && by_socketcall) { /* six arguments, in memory */
            static unsigned int args[6];
            args[0] = (unsigned int)s, args[1] = (unsigned int)P(payload), args[2] = 4;
            args[3] = 0, args[4] = (unsigned int)P(&in4), args[5] = sizeof in4;
            ret = call(102, 102, SC_SENDTO, P(args), 0, 0, 0);
        } else {
            ret = call6(44, 369, s, P(payload), 4, 0, P(&in4), sizeof in4);
        }
    } else if (s >= 0) {
#ifdef __i386__
        ret = call(46, 370, s, P(&msg), 0, 0, 0);
#else
        ret = int80 ? call(46, 370, s, P(&msg32), 0, 0, 0) : call(46, 370, s, P(&msg), 0, 0, 0);
#endif
    }
    say(op, "%s", ret == 4 ? "ok" : result(ret < 0 ? ret : -EIO));
    if (s >= 0)
        close((int)s);
}

/* A netlink route request on an interface that does not exist: EPERM without CAP_NET_ADMIN,
 * ENODEV with it (and nothing changed either way). */
#define NO_SUCH_INTERFACE 0x7ffffff0
static void netlink_request(const char *op, int type)
{
    static struct {
        struct nlmsghdr h;
        union {
            struct ifinfomsg link;
            struct { struct ifaddrmsg a; struct rtattr r; unsigned char addr[4]; } addr;
            struct { struct rtmsg m; struct rtattr r1; unsigned char dst[4]; struct rtattr r2;
                     int oif; } route;
        } u;
    } req;
    static struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    static char answer[1024];
    memset(&req, 0, sizeof req);
    req.h.nlmsg_type = type;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.h.nlmsg_seq = 1;
    if (type == RTM_NEWLINK) {
        req.u.link.ifi_family = AF_UNSPEC;
        req.u.link.ifi_index = NO_SUCH_INTERFACE;
        req.u.link.ifi_flags = req.u.link.ifi_change = IFF_UP;
        req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.u.link);
    } else if (type == RTM_NEWADDR) {
        req.h.nlmsg_flags |= NLM_F_CREATE | NLM_F_EXCL;
        req.u.addr.a = (struct ifaddrmsg){.ifa_family = AF_INET, .ifa_prefixlen = 32,
                                          .ifa_index = NO_SUCH_INTERFACE};
        req.u.addr.r = (struct rtattr){.rta_len = RTA_LENGTH(4), .rta_type = IFA_LOCAL};
        inet_pton(AF_INET, "10.77.254.1", req.u.addr.addr);
        req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.u.addr);
    } else {
        req.h.nlmsg_flags |= NLM_F_CREATE;
        req.u.route.m = (struct rtmsg){.rtm_family = AF_INET, .rtm_dst_len = 24,
                                       .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_BOOT,
                                       .rtm_scope = RT_SCOPE_LINK, .rtm_type = RTN_UNICAST};
        req.u.route.r1 = (struct rtattr){.rta_len = RTA_LENGTH(4), .rta_type = RTA_DST};
        inet_pton(AF_INET, "10.77.254.0", req.u.route.dst);
        req.u.route.r2 = (struct rtattr){.rta_len = RTA_LENGTH(4), .rta_type = RTA_OIF};
        req.u.route.oif = NO_SUCH_INTERFACE;
        req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.u.route);
    }
    long s = sys_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), ret = s;
    if (s >= 0) {
        static struct iovec iov;
        static struct msghdr msg;
        static unsigned int iov32[2];
        static struct { unsigned int name, namelen, iov, iovlen, control, controllen,
                        flags; } msg32;
        iov = (struct iovec){&req, req.h.nlmsg_len};
        msg = (struct msghdr){.msg_name = &kernel, .msg_namelen = sizeof kernel,
                              .msg_iov = &iov, .msg_iovlen = 1};
        iov32[0] = (unsigned int)P(&req), iov32[1] = req.h.nlmsg_len;
        msg32 = (typeof(msg32)){(unsigned int)P(&kernel), sizeof kernel,
                                (unsigned int)P(iov32), 1, 0, 0, 0};
#ifdef __i386__
        ret = call(46, 370, s, P(&msg), 0, 0, 0);
#else
        ret = call(46, 370, s, int80 ? P(&msg32) : P(&msg), 0, 0, 0);
#endif
        if (ret >= 0) {
            long n = recv((int)s, answer, sizeof answer, 0);
            struct nlmsghdr *h = (struct nlmsghdr *)answer;
            ret = -EIO;
            if (n >= (long)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && h->nlmsg_type == NLMSG_ERROR)
                ret = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
        }
        close((int)s);
    }
    say(op, "%s", result(ret));
}

/* ---- R4: other processes ------------------------------------------------------------------ */

static void pid_call(const char *op, const char *spec)
{
    static struct { unsigned int version; int pid; } header;
    static unsigned int data[6];
    static unsigned long mask[16];
    static unsigned long long limits[2];
    static char local_buf[16];
    static struct iovec local, remote;
    char what[32];
    long pid, ret = -EINVAL;
    if (sscanf(spec, "%31[^:]:%ld", what, &pid) != 2) {
        say(op, "EINVAL");
        return;
    }
    header.version = 0x20080522, header.pid = (int)pid;
    if (strcmp(what, "capget") == 0)
        ret = call(125, 184, P(&header), P(data), 0, 0, 0);
    else if (strcmp(what, "getpgid") == 0)
        ret = call(121, 132, pid, 0, 0, 0, 0);
    else if (strcmp(what, "getaffinity") == 0)
        ret = call(204, 242, pid, int80 ? 4 : (long)sizeof mask, P(mask), 0, 0);
    else if (strcmp(what, "getpriority") == 0)
        ret = call(140, 96, 0 /* PRIO_PROCESS */, pid, 0, 0, 0);
    else if (strcmp(what, "setpriority") == 0) /* to 0, what a fresh process has anyway */
        ret = call(141, 97, 0, pid, 0, 0, 0);
    else if (strcmp(what, "prlimit") == 0)
        ret = call(302, 340, pid, 7 /* NOFILE */, 0, P(limits), 0);
    else if (strcmp(what, "kill") == 0) /* signal 0: does it exist for us? */
        ret = call(62, 37, pid, 0, 0, 0, 0);
    else if (strcmp(what, "cont") == 0) /* SIGCONT: wakes a stopped process, harms none */
        ret = call(62, 37, pid, SIGCONT, 0, 0, 0);
    else if (strcmp(what, "ptrace") == 0) /* PTRACE_SEIZE: traces without stopping it */
        ret = call(101, 26, 0x4206, pid, 0, 0, 0);
    else if (strcmp(what, "pidfd") == 0)
        ret = call(434, 434, pid, 0, 0, 0, 0);
    else if (strncmp(what, "setown", 6) == 0 || strcmp(what, "fiosetown") == 0) {
        /* Who gets this socket's SIGIO: F_SETOWN (pid in a register), F_SETOWN_EX and
           FIOSETOWN (in memory). Success names a process outside the jail. */
        static struct { int type; int pid; } owner;
        static int who;
        long s = sys_socket(AF_UNIX, SOCK_DGRAM, 0);
        owner.type = 1 /* F_OWNER_PID */, owner.pid = (int)pid, who = (int)pid;
        ret = s;
        if (s >= 0 && strcmp(what, "setown") == 0)
            ret = call(72, 221, s, 8 /* F_SETOWN */, pid, 0, 0);
        else if (s >= 0 && strcmp(what, "setown_ex") == 0)
            ret = call(72, 221, s, 15 /* F_SETOWN_EX */, P(&owner), 0, 0);
        else if (s >= 0)
            ret = call(16, 54, s, 0x8901 /* FIOSETOWN */, P(&who), 0, 0);
        if (s >= 0)
            close((int)s);
    }
    else if (strcmp(what, "vmread") == 0) { /* 16 bytes at its first page of code */
        local = (struct iovec){local_buf, sizeof local_buf};
        remote = (struct iovec){(void *)0x400000, sizeof local_buf};
#ifdef __i386__
        ret = call6(310, 347, pid, P(&local), 1, P(&remote), 1, 0);
#else
        static unsigned int local32[2], remote32[2]; /* compat iovecs */
        local32[0] = (unsigned int)P(local_buf), local32[1] = sizeof local_buf;
        remote32[0] = 0x400000, remote32[1] = sizeof local_buf;
        ret = int80 ? call6(310, 347, pid, P(local32), 1, P(remote32), 1, 0)
                    : call6(310, 347, pid, P(&local), 1, P(&remote), 1, 0);
#endif
    }
    if (ret >= 0 && strcmp(what, "pidfd") == 0)
        close((int)ret);
    say(op, "%s", result(ret < 0 ? ret : 0));
}

/* ---- abstract unix names: the host's are out of reach --------------------------------------- */

static struct sockaddr_un abstract_to;

static int abstract_name(const char *name)
{
    size_t n = strlen(name);
    if (n + 1 > sizeof abstract_to.sun_path)
        return -1;
    memset(&abstract_to, 0, sizeof abstract_to);
    abstract_to.sun_family = AF_UNIX;
    memcpy(abstract_to.sun_path + 1, name, n);
    return (int)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* uconnect:NAME (stream), uconnectd:NAME (datagram connect), usendmsg:NAME (datagram
   sendmsg with the name): each to the abstract name "\0NAME". */
static void abstract_call(const char *op, const char *name, int how)
{
    static struct msghdr message;
    static struct iovec data;
    int length = abstract_name(name);
    if (length < 0) {
        say(op, "EINVAL");
        return;
    }
    long s = sys_socket(AF_UNIX, how == 0 ? SOCK_STREAM : SOCK_DGRAM, 0), ret = s;
    if (s >= 0 && how < 2)
        ret = sys_connect((int)s, &abstract_to, length);
    else if (s >= 0) {
        data = (struct iovec){"hjprobe", 7};
        message = (struct msghdr){.msg_name = &abstract_to, .msg_namelen = length,
                                  .msg_iov = &data, .msg_iovlen = 1};
#ifdef __i386__
        ret = sock_call(46, 370, SC_SENDMSG, 3, s, P(&message), 0, 0, 0);
#else
        static unsigned int message32[7], data32[2]; /* the compat msghdr and iovec */
        data32[0] = (unsigned int)P("hjprobe"), data32[1] = 7;
        message32[0] = (unsigned int)P(&abstract_to), message32[1] = length;
        message32[2] = (unsigned int)P(data32), message32[3] = 1;
        ret = sock_call(46, 370, SC_SENDMSG, 3, s, int80 ? P(message32) : P(&message), 0, 0,
                        0);
#endif
    }
    say(op, "%s", result(ret < 0 ? ret : 0));
    if (s >= 0)
        close((int)s);
}

/* uown:NAME (abstract "\0NAME") or uown:/PATH: bind and listen there, then connect to it
   from a second socket and pass a byte: the jail's own unix names work. */
static void own_unix(const char *op, const char *name)
{
    static struct sockaddr_un at;
    int length;
    if (name[0] == '/') {
        memset(&at, 0, sizeof at);
        at.sun_family = AF_UNIX;
        snprintf(at.sun_path, sizeof at.sun_path, "%s", name);
        unlink(name);
        length = (int)sizeof at;
    } else {
        length = abstract_name(name);
        at = abstract_to;
    }
    long server = sys_socket(AF_UNIX, SOCK_STREAM, 0);
    long ret = server < 0 ? server : sys_bind((int)server, &at, length);
    if (ret >= 0)
        ret = call(50, 363, server, 4, 0, 0, 0); /* listen */
    long client = ret < 0 ? ret : sys_socket(AF_UNIX, SOCK_STREAM, 0);
    ret = client < 0 ? client : sys_connect((int)client, &at, length);
    if (ret >= 0) {
        char byte = 0;
        int peer = accept((int)server, NULL, NULL);
        ret = peer < 0 ? -errno : write((int)client, "u", 1) == 1 && read(peer, &byte, 1) == 1
                                            && byte == 'u' ? 0 : -EIO;
        if (peer >= 0)
            close(peer);
    }
    say(op, "%s", result(ret));
    if (client >= 0)
        close((int)client);
    if (server >= 0)
        close((int)server);
}

/* upeercred:/PATH:UID:GID: a child that took UID, GID (and no groups) connects to our
   listener at PATH; what the listener's SO_PEERCRED says of it: "ok:UID:GID:child" when the
   pid is the child's, "ok:UID:GID:other" when it names another process. */
static void peer_credentials(const char *op, const char *spec)
{
    static struct sockaddr_un at;
    char path[sizeof at.sun_path];
    unsigned int uid, gid;
    if (sscanf(spec, "%107[^:]:%u:%u", path, &uid, &gid) != 3 || path[0] != '/') {
        say(op, "EINVAL");
        return;
    }
    memset(&at, 0, sizeof at);
    at.sun_family = AF_UNIX;
    snprintf(at.sun_path, sizeof at.sun_path, "%s", path);
    unlink(path);
    long server = sys_socket(AF_UNIX, SOCK_STREAM, 0);
    long ret = server < 0 ? server : sys_bind((int)server, &at, (int)sizeof at);
    if (ret >= 0)
        ret = call(50, 363, server, 4, 0, 0, 0); /* listen */
    if (ret >= 0)
        ret = chmod(path, 0777) < 0 ? -errno : 0;
    if (ret < 0) {
        say(op, "%s", result(ret));
        if (server >= 0)
            close((int)server);
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
            setresuid(uid, uid, uid) < 0)
            _exit(2);
        long s = sys_socket(AF_UNIX, SOCK_STREAM, 0);
        _exit(s >= 0 && sys_connect((int)s, &at, (int)sizeof at) == 0 ? 0 : 3);
    }
    int status = 0;
    struct ucred peer = {0};
    socklen_t length = sizeof peer;
    int accepted = -1;
    if (child > 0) {
        struct pollfd ready = {(int)server, POLLIN, 0};
        if (poll(&ready, 1, 10000) == 1)
            accepted = accept((int)server, NULL, NULL);
        waitpid(child, &status, 0);
    }
    if (accepted < 0 || getsockopt(accepted, SOL_SOCKET, SO_PEERCRED, &peer, &length) < 0)
        say(op, "%s", child < 0 ? result(-errno)
                      : WIFEXITED(status) && WEXITSTATUS(status) == 2 ? "ESETUID" : "ENOPEER");
    else
        say(op, "ok:%u:%u:%s", peer.uid, peer.gid, peer.pid == child ? "child" : "other");
    if (accepted >= 0)
        close(accepted);
    close((int)server);
    unlink(path);
}

/* uflip:NAME:TRIES: a child flips a shared page's sockaddr between a path of the jail's
   (nothing there) and the host's abstract "\0NAME" while we connect with it: a judgement
   of the path the kernel reads again finds the abstract name. "ok" if any connect did. */
static void abstract_flip(const char *op, const char *spec)
{
    char name[64];
    int tries;
    if (sscanf(spec, "%63[^:]:%d", name, &tries) != 2 || abstract_name(name) < 0) {
        say(op, "EINVAL");
        return;
    }
    int length = abstract_name(name);
    struct sockaddr_un *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        say(op, "%s", result(-errno));
        return;
    }
    struct sockaddr_un path = abstract_to;
    memset(path.sun_path, 'x', length - offsetof(struct sockaddr_un, sun_path));
    path.sun_path[0] = '/';
    *shared = path;
    pid_t child = fork();
    if (child == 0) {
        for (;;) {
            memcpy(shared->sun_path, abstract_to.sun_path, sizeof path.sun_path);
            memcpy(shared->sun_path, path.sun_path, sizeof path.sun_path);
        }
    }
    long last = -EINVAL, reached = 0;
    for (int k = 0; k < tries && !reached; k++) {
        long s = sys_socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0) {
            last = s;
            break;
        }
        last = sys_connect((int)s, shared, length);
        reached = last == 0;
        close((int)s);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    say(op, "%s", reached ? "ok" : result(last));
}

/* ---- races -------------------------------------------------------------------------------- */

/* The sysjail race: one thread flips a sockaddr while another binds and connects with it. */
static struct sockaddr_in race_bind, race_connect;
static struct in_addr race_jail, race_other, race_loopback;
static volatile int race_done;

static void *flipper(void *arg)
{
    /* Volatile stores: each one must reach memory, none may be folded away. */
    volatile in_addr_t *bind_at = &race_bind.sin_addr.s_addr;
    volatile in_addr_t *connect_at = &race_connect.sin_addr.s_addr;
    while (!race_done) {
        *bind_at = race_other.s_addr;
        *connect_at = race_loopback.s_addr;
        for (volatile int spin = 0; spin < 50; spin++)
            ;
        *bind_at = race_jail.s_addr;
        *connect_at = race_jail.s_addr;
        for (volatile int spin = 0; spin < 50; spin++)
            ;
    }
    return arg;
}

static void sockaddr_race(const char *op, const char *spec)
{
    char jail[32], other[32];
    int port, tries;
    if (sscanf(spec, "%31[^:]:%31[^:]:%d:%d", jail, other, &port, &tries) != 4) {
        say(op, "EINVAL");
        return;
    }
    inet_pton(AF_INET, jail, &race_jail);
    inet_pton(AF_INET, other, &race_other);
    inet_pton(AF_INET, "127.0.0.1", &race_loopback);
    race_bind = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr = race_jail};
    race_connect = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port),
                                        .sin_addr = race_jail};
    pthread_t thread;
    pthread_create(&thread, NULL, flipper, NULL);
    long escaped = 0, bound = 0;
    for (int i = 0; i < tries; i++) {
        struct sockaddr_in name;
        socklen_t length = sizeof name;
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (bind(s, (struct sockaddr *)&race_bind, sizeof race_bind) == 0) {
            bound++;
            getsockname(s, (struct sockaddr *)&name, &length);
            escaped += name.sin_addr.s_addr != race_jail.s_addr;
        }
        close(s);
        s = socket(AF_INET, SOCK_STREAM, 0);
        connect(s, (struct sockaddr *)&race_connect, sizeof race_connect);
        length = sizeof name;
        /* A jail's own loopback (a network namespace's) may be a source, and a refused
         * connect leaves none; whether a connect reached the host's 127.0.0.1 instead, the
         * host's listener tells. */
        if (getsockname(s, (struct sockaddr *)&name, &length) == 0 && name.sin_port
            && (ntohl(name.sin_addr.s_addr) >> 24) != 127 && name.sin_addr.s_addr != 0)
            escaped += name.sin_addr.s_addr != race_jail.s_addr;
        close(s);
    }
    race_done = 1;
    pthread_join(thread, NULL);
    say("race_bound", "%ld", bound);
    if (escaped)
        say(op, "escaped:%ld", escaped);
    else
        say(op, "ok");
}

/* The descriptor swap: one thread dup2()s a fresh internet socket over a unix socket's fd N,
 * and back, while another makes CALL on N with an internet address (IP:PORT), so that a
 * supervisor judging N as a unix socket lets the kernel make the call on the internet one.
 * Counts the rounds whose internet socket connected, or got bound (or listened) on 0.0.0.0
 * or 127.0.0.1: a supervisor's own bind takes the jail's address. */
static volatile int swap_inet = -1, swap_done;
static int swap_fd, swap_unix;

static void *swapper(void *arg)
{
    while (!swap_done) {
        int inet = swap_inet;
        if (inet >= 0)
            dup2(inet, swap_fd);
        dup2(swap_unix, swap_fd);
    }
    return arg;
}

static void fd_swap(const char *op, const char *spec)
{
    char what[16], ip[64];
    int port, rounds;
    if (sscanf(spec, "%15[^:]:%63[^:]:%d:%d", what, ip, &port, &rounds) != 4) {
        say(op, "EINVAL");
        return;
    }
    int stream = strcmp(what, "connect") == 0 || strcmp(what, "listen") == 0;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &to.sin_addr);
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    struct mmsghdr mm = {.msg_hdr = {.msg_name = &to, .msg_namelen = sizeof to,
                                     .msg_iov = &iov, .msg_iovlen = 1}};
    swap_unix = socket(AF_UNIX, stream ? SOCK_STREAM : SOCK_DGRAM, 0);
    swap_fd = dup(swap_unix);
    swap_done = 0;
    pthread_t thread;
    pthread_create(&thread, NULL, swapper, NULL);
    long reached = 0, wrong = 0;
    for (int i = 0; i < rounds; i++) {
        int inet = socket(AF_INET, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK, 0);
        swap_inet = inet;
        if (strcmp(what, "connect") == 0)
            connect(swap_fd, (struct sockaddr *)&to, sizeof to);
        else if (strcmp(what, "bind") == 0)
            bind(swap_fd, (struct sockaddr *)&to, sizeof to);
        else if (strcmp(what, "listen") == 0)
            listen(swap_fd, 1);
        else if (strcmp(what, "sendto") == 0)
            sendto(swap_fd, &byte, 1, 0, (struct sockaddr *)&to, sizeof to);
        else if (strcmp(what, "sendmsg") == 0)
            sendmsg(swap_fd, &mm.msg_hdr, 0);
        else
            sendmmsg(swap_fd, &mm, 1, 0);
        swap_inet = -1;
        struct sockaddr_in name;
        socklen_t length = sizeof name;
        if (strcmp(what, "connect") == 0) {
            struct pollfd out = {inet, POLLOUT, 0};
            int err = 0;
            socklen_t size = sizeof err;
            poll(&out, 1, 20);
            getsockopt(inet, SOL_SOCKET, SO_ERROR, &err, &size);
            struct sockaddr_in local;
            socklen_t local_length = sizeof local;
            /* Connected, and not to itself: a socket the supervisor bound to the jail's
               address and connected there can draw the destination's port as its own
               (TCP's simultaneous open), which reaches nothing. */
            reached += !err && getpeername(inet, (struct sockaddr *)&name, &length) == 0
                       && getsockname(inet, (struct sockaddr *)&local, &local_length) == 0
                       && (local.sin_port != name.sin_port
                           || local.sin_addr.s_addr != name.sin_addr.s_addr);
        } else if (getsockname(inet, (struct sockaddr *)&name, &length) == 0 && name.sin_port) {
            in_addr_t a = ntohl(name.sin_addr.s_addr);
            wrong += a == INADDR_ANY || a == INADDR_LOOPBACK;
        }
        close(inet);
    }
    swap_done = 1;
    pthread_join(thread, NULL);
    close(swap_fd);
    close(swap_unix);
    if (reached || wrong)
        say(op, "escaped:reached=%ld,wrong=%ld", reached, wrong);
    else
        say(op, "ok");
}

/* Processes and threads made as fast as possible, each trying kill(PID, 0) first thing: a
 * task that ran before its tracer had it would find the host's process. In a pid namespace
 * of the jail's own the number PID may come to be one of the storm's own tasks (a fresh
 * host's victim has a small pid, and the storm makes hundreds): a hit then says nothing,
 * and is not counted. (Without a pid namespace of its own, no task of the jail can have the
 * host process's number while it lives.) */
static long storm_pid;
static volatile long storm_hits;
static volatile int storm_own;  /* PID was one of ours: the hits are no evidence */

static void *storm_thread(void *arg)
{
    if (syscall(SYS_gettid) == storm_pid)
        storm_own = 1;
    if (call(62, 37, storm_pid, 0, 0, 0, 0) == 0)
        __sync_fetch_and_add(&storm_hits, 1);
    return arg;
}

static void clone_storm(const char *op, const char *spec)
{
    int tries;
    if (sscanf(spec, "%ld:%d", &storm_pid, &tries) != 2) {
        say(op, "EINVAL");
        return;
    }
    long hits = 0;
    if (getpid() == storm_pid || getppid() == storm_pid)
        storm_own = 1;
    for (int i = 0; i < tries; i++) {
        pid_t child = fork();
        if (child == 0)
            _exit(call(62, 37, storm_pid, 0, 0, 0, 0) == 0);
        if (child == storm_pid)
            storm_own = 1;
        pthread_t thread;
        if (pthread_create(&thread, NULL, storm_thread, NULL) == 0)
            pthread_join(thread, NULL);
        int status;
        if (child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status))
            hits += WEXITSTATUS(status);
    }
    hits += storm_hits;
    if (hits && !storm_own)
        say(op, "escaped:%ld", hits);
    else
        say(op, "ok");
}

/* vfork, then exec PROBE in the child (which shares our memory until it execs) to kill(PID). */
static void vfork_exec(const char *op, const char *spec, const char *hostname, const char *abi)
{
    static char probe[PATH_MAX], target[64];
    if (sscanf(spec, "%[^:]:%63s", probe, target) != 2) {
        say(op, "EINVAL");
        return;
    }
    static char kill_op[80];
    snprintf(kill_op, sizeof kill_op, "pid:kill:%s", target);
    fflush(stdout);
    pid_t child = vfork();
    if (child == 0) {
        char *argv[] = {probe, (char *)hostname, (char *)abi, kill_op, NULL};
        execv(probe, argv);
        _exit(127);
    }
    int status = 0;
    waitpid(child, &status, 0);
    say(op, "%s", WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ok" : "EIO");
}

/* ---- R5: the superuser -------------------------------------------------------------------- */

/* Run a setuid-root copy of this program as nobody: with no_new_privs it stays nobody. */
static void setuid_regain(const char *op, const char *path)
{
    int out[2];
    char answer[32] = {0};
    if (pipe(out) != 0) {
        say(op, "%s", strerrorname_np(errno));
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        dup2(out[1], 1);
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            _exit(126);
        execl(path, "hjsuid", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    long n = read(out[0], answer, sizeof answer - 1);
    close(out[0]);
    int status = 0;
    waitpid(child, &status, 0);
    if (n <= 0) {
        say(op, "E%d", WIFEXITED(status) ? WEXITSTATUS(status) : 255);
        return;
    }
    answer[strcspn(answer, "\n")] = 0;
    say(op, "euid:%s", answer);
}

static void tiocsti_on_the_terminal(const char *op)
{
    static char byte = 'x';
    long fd = sys_open("/dev/tty", O_RDWR | O_NOCTTY);
    if (fd < 0) {
        say(op, "%s", result(fd));
        return;
    }
    say(op, "%s", result(call(16, 54, fd, 0x5412 /* TIOCSTI */, P(&byte), 0, 0)));
    close((int)fd);
}

static char buf[4096] __attribute__((aligned(4096)));
static char attr[128];
static long long ts64[2];
static int ts32[2];
static unsigned int socket_args[3];
static int zero_timezone[2];
static struct { unsigned int bytes; int type; unsigned char h[8]; } no_handle = {8, 1, {0}};

struct op {
    const char *name;
    long nr64, nr32;
    long a[5];
};

static void chattr_immutable(const char *op)
{
    /* FS_IOC_SETFLAGS with FS_IMMUTABLE_FL (chattr +i), then the old flags again. */
    static int flags, old;
    int fd = open("/tmp/hjprobe-own", O_RDONLY);
    ioctl(fd, 0x80086601 /* FS_IOC_GETFLAGS */, &old);
    flags = old | 0x10;
    long ret = call(16, 54, fd, int80 ? 0x40046602 : (long)0x40086602L, P(&flags), 0, 0);
#ifdef __i386__
    ret = call(16, 54, fd, 0x40046602, P(&flags), 0, 0);
#endif
    if (ret == 0 && unlink("/tmp/hjprobe-own") == 0)
        ret = -EEXIST; /* immutable, yet removable: the flag did not hold */
    ioctl(fd, 0x40086602, &old);
    close(fd);
    say(op, "%s", result(ret));
}

/* ---- raw sockets with a forged source ----------------------------------------------------- */

static unsigned short checksum(const unsigned char *data, int len)
{
    unsigned long sum = 0;
    for (int i = 0; i + 1 < len; i += 2)
        sum += (data[i] << 8) | data[i + 1];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)~sum;
}

static long spoof(const char *src, const char *dst)
{
    unsigned char packet[28] = {0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1 /* ICMP */};
    struct sockaddr_in to = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, src, packet + 12) != 1 || inet_pton(AF_INET, dst, &to.sin_addr) != 1)
        return -EINVAL;
    memcpy(packet + 16, &to.sin_addr, 4);
    unsigned char *icmp = packet + 20;
    icmp[0] = 8; /* echo request, id 0x4a4a */
    icmp[4] = icmp[5] = 0x4a;
    unsigned short sum = checksum(icmp, 8);
    icmp[2] = sum >> 8;
    icmp[3] = sum & 0xff;
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* IPPROTO_RAW implies IP_HDRINCL */
    if (fd < 0)
        return -errno;
    long ret = sendto(fd, packet, sizeof packet, 0, (struct sockaddr *)&to, sizeof to);
    ret = ret < 0 ? -errno : 0;
    close(fd);
    return ret;
}

static void *busy_thread(void *arg)
{
    /* Judged and unjudged calls from many threads at once: uname, kill(self, 0), getpid. */
    struct utsname names;
    for (int i = 0; i < 200; i++) {
        if (uname(&names) != 0 || kill(getpid(), 0) != 0)
            return (void *)1;
        getpid();
    }
    return arg;
}

static long threads(void)
{
    pthread_t ids[8];
    for (int i = 0; i < 8; i++)
        if (pthread_create(&ids[i], NULL, busy_thread, NULL) != 0)
            return -EAGAIN;
    long failed = 0;
    for (int i = 0; i < 8; i++) {
        void *outcome;
        pthread_join(ids[i], &outcome);
        failed |= (long)outcome;
    }
    return failed ? -EIO : 0;
}

/* The connection a UDP socket made by connect() is dissolved by connect(AF_UNSPEC). */
static long dissolve(const char *spec)
{
    struct sockaddr_in to = {.sin_family = AF_INET};
    struct sockaddr none = {.sa_family = AF_UNSPEC};
    char ip[32];
    int port;
    if (sscanf(spec, "%31[^:]:%d", ip, &port) != 2)
        return -EINVAL;
    to.sin_port = htons(port);
    inet_pton(AF_INET, ip, &to.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer;
    socklen_t length = sizeof peer;
    long ret = connect(s, (struct sockaddr *)&to, sizeof to) ? -errno : 0;
    if (ret == 0)
        ret = connect(s, &none, sizeof none) ? -errno : 0;
    if (ret == 0 && getpeername(s, (struct sockaddr *)&peer, &length) == 0)
        ret = -EISCONN; /* still connected: AF_UNSPEC did not dissolve it */
    close(s);
    return ret;
}

/* ---- the entry path: what a jail does to the host's way in (issue 13) --------------------- */

/* A process that holds host powers must never become a handle for the jail. procscan:MS
 * loops over /proc for MS milliseconds (or until a line on stdin), trying each new process's
 * exe, mem, environ, fd/ and PTRACE_SEIZE (those there when it began, once). A
 * reach counts as unconfined when the status, read after it, still says "Seccomp: 0" (a
 * filter is never taken off, so it was unconfined then too). Prints that count, how many
 * descriptors it reached that name a namespace not its own, and the distinct dev:ino of every
 * exe it opened (the host tells its own binaries among them). */
static unsigned char scan_known[(1 << 22) / 8], scan_hit[(1 << 22) / 8];
#define PID_BIT(set, pid) ((set)[(pid) >> 3] & (1 << ((pid) & 7)))
#define SET_PID(set, pid) ((set)[(pid) >> 3] |= (unsigned char)(1 << ((pid) & 7)))

static int seccomp_mode(int pid)
{
    char path[64], line[128];
    int mode = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Seccomp: %d", &mode) == 1)
            break;
    fclose(f);
    return mode;
}

static int opens(int pid, const char *what, int flags)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* Whether a descriptor's link names a namespace other than ours of that kind (the host's,
 * reached through another process's fd/). */
static int foreign_namespace(const char *link)
{
    static const char *kinds[] = {"pid", "mnt", "net", "user", "uts", "ipc", "cgroup"};
    char mine[64], own[128];
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t n = strlen(kinds[k]);
        if (strncmp(link, kinds[k], n) != 0 || link[n] != ':')
            continue;
        snprintf(mine, sizeof mine, "/proc/self/ns/%s", kinds[k]);
        ssize_t got = readlink(mine, own, sizeof own - 1);
        own[got > 0 ? got : 0] = 0;
        return strcmp(own, link) != 0;
    }
    return 0;
}

static long scan_foreign_ns;

static void scan_one(int pid, long *unconfined, char *exes, size_t size)
{
    char path[64], seen[48];
    int reached = 0;
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        reached = 1;
        if (fstat(fd, &st) == 0) {
            snprintf(seen, sizeof seen, "%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
            if (!strstr(exes, seen) && strlen(exes) + strlen(seen) + 2 < size)
                snprintf(exes + strlen(exes), size - strlen(exes), "%s%s", *exes ? "," : "",
                         seen);
        }
        close(fd);
    }
    reached |= opens(pid, "mem", O_RDONLY) | opens(pid, "environ", O_RDONLY);
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *fds = opendir(path);
    if (fds) {
        struct dirent *entry;
        while ((entry = readdir(fds)))
            if (entry->d_name[0] != '.') {
                char each[80], link[128];
                snprintf(each, sizeof each, "fd/%.16s", entry->d_name);
                if (opens(pid, each, O_PATH)) {
                    reached = 1;
                    snprintf(path, sizeof path, "/proc/%d/fd/%.16s", pid, entry->d_name);
                    ssize_t got = readlink(path, link, sizeof link - 1);
                    link[got > 0 ? got : 0] = 0;
                    scan_foreign_ns += foreign_namespace(link);
                }
            }
        closedir(fds);
    }
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) { /* let go at once: interrupt, wait, detach */
        reached = 1;
        int status;
        ptrace(PTRACE_INTERRUPT, pid, 0, 0);
        if (waitpid(pid, &status, __WALL) == pid && WIFSTOPPED(status))
            ptrace(PTRACE_DETACH, pid, 0, 0);
    }
    if (reached && !PID_BIT(scan_hit, pid) && seccomp_mode(pid) == 0) {
        SET_PID(scan_hit, pid);
        (*unconfined)++;
    }
}

static void proc_scan(const char *op, const char *spec)
{
    static char exes[2048];
    long ms = atol(spec), unconfined = 0, scanned = 0;
    int self = getpid();
    struct dirent *entry;
    DIR *proc = opendir("/proc");
    if (!proc || ms <= 0) {
        say(op, "%s", proc ? "EINVAL" : strerrorname_np(errno));
        return;
    }
    while ((entry = readdir(proc))) { /* what ran before the scan (init, the holder): once */
        int pid = atoi(entry->d_name);
        if (pid > 0 && pid < (1 << 22) && pid != self) {
            scan_one(pid, &unconfined, exes, sizeof exes);
            SET_PID(scan_known, pid);
        }
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    say("scanning", "ready");
    for (;;) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > ms
            || poll(&in, 1, 0) > 0)
            break;
        rewinddir(proc);
        while ((entry = readdir(proc))) {
            int pid = atoi(entry->d_name);
            if (pid > 0 && pid < (1 << 22) && pid != self && !PID_BIT(scan_known, pid)) {
                scan_one(pid, &unconfined, exes, sizeof exes);
                scanned++;
            }
        }
        usleep(200); /* the jexecs need the CPUs more than a pass needs to follow at once */
    }
    closedir(proc);
    say(op, "unconfined:%ld:foreignns:%ld:scanned:%ld:exe:%s", unconfined, scan_foreign_ns,
        scanned, exes);
}

/* swap:DIR:TARGET:MS:NAME[,NAME...][:SPIN]: for MS milliseconds (or until a line on stdin),
 * each DIR/NAME in turn is exchanged with a symlink to TARGET (a host path, which means
 * nothing in here), then put back. Another jail starting on DIR must never follow it. */
static unsigned long swap_spin = 400000;
#ifndef SWAP_REAL
#define SWAP_REAL 3
#endif

static void swap_pause(unsigned long most) /* of a random length, up to `most` turns of a
                                            * loop: whatever a jail's steps take, some fits */
{
    static unsigned long long state = 88172645463325252ULL;
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    for (volatile unsigned long spin = 0, n = state % most; spin < n; spin++)
        ;
}

static void swap_loop(const char *op, const char *spec)
{
    static char dir[1024], target[1024], names[256], real[PATH_MAX], aside[PATH_MAX];
    long ms, swaps = 0;
    if (sscanf(spec, "%1023[^:]:%1023[^:]:%ld:%255s", dir, target, &ms, names) != 4) {
        say(op, "EINVAL");
        return;
    }
    char *list[16], *spin = strchr(names, ':'); /* NAMES:SPIN: pauses up to SPIN turns */
    int n = 0;
    if (spin) {
        *spin = 0;
        swap_spin = strtoul(spin + 1, NULL, 10) + 1;
    }
    for (char *name = strtok(names, ","); name && n < 16; name = strtok(NULL, ","))
        list[n++] = name;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    say("swapping", "ready");
    for (long i = 0;; i++) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > ms
            || poll(&in, 1, 0) > 0)
            break;
        snprintf(real, sizeof real, "%s/%s", dir, list[i % n]);
        snprintf(aside, sizeof aside, "%s/.%s.hjswap", dir, list[i % n]);
        /* The symlink waits beside the directory; one atomic exchange puts it in the
         * directory's place (no moment with neither), and the next puts it back. */
        if (symlink(target, aside) != 0 && errno != EEXIST)
            continue;
        if (renameat2(AT_FDCWD, aside, AT_FDCWD, real, RENAME_EXCHANGE) == 0) {
            swaps++;
            swap_pause(swap_spin);
            renameat2(AT_FDCWD, aside, AT_FDCWD, real, RENAME_EXCHANGE);
        }
        swap_pause(swap_spin * SWAP_REAL); /* a starting jail must first find it real */
    }
    for (int k = 0; k < n; k++) { /* only the waiting symlinks are left to remove */
        struct stat st;
        snprintf(real, sizeof real, "%s/%s", dir, list[k]);
        snprintf(aside, sizeof aside, "%s/.%s.hjswap", dir, list[k]);
        if (lstat(real, &st) == 0 && S_ISLNK(st.st_mode)) /* never left so; still, put back */
            renameat2(AT_FDCWD, aside, AT_FDCWD, real, RENAME_EXCHANGE);
        unlink(aside);
    }
    say(op, "ok:%ld", swaps);
}

/* cachewrite:DIR: whether a file in DIR can be opened for writing (none is written) or a new
 * one created there (removed again at once). */
static void cache_write(const char *op, const char *dir)
{
    char path[PATH_MAX];
    long writable = 0, created = 0, ret;
    DIR *d = opendir(dir);
    if (!d) {
        say(op, "%s", strerrorname_np(errno));
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(d)))
        if (entry->d_type == DT_REG) {
            snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
            int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0) {
                writable++;
                close(fd);
            }
        }
    closedir(d);
    snprintf(path, sizeof path, "%s/.hjprobe-tamper-%d", dir, (int)getpid());
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    ret = fd < 0 ? -errno : 0;
    if (fd >= 0) {
        created = 1;
        close(fd);
        unlink(path);
    }
    if (writable || created)
        say(op, "escaped:created=%ld,writable=%ld", created, writable);
    else
        say(op, "%s", result(ret));
}

/* family:NAME: socket() of a family no namespace confines, through the chosen ABI. */
static void family_socket(const char *op, const char *name)
{
    static const struct { const char *name; int family, type, protocol; } families[] = {
        {"vsock", 40, SOCK_STREAM, 0}, {"bluetooth", 31, SOCK_STREAM, 3 /* RFCOMM */},
        {"can", 29, SOCK_RAW, 1 /* CAN_RAW */}, {"tipc", 30, SOCK_RDM, 0},
        {"kcm", 41, SOCK_DGRAM, 0}, {"xdp", 44, SOCK_RAW, 0}, {"alg", 38, SOCK_SEQPACKET, 0},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (strcmp(families[i].name, name) != 0)
            continue;
        long s = sys_socket(families[i].family, families[i].type, families[i].protocol);
        if (s >= 0) {
            close((int)s);
            say(op, "ok");
        } else {
            say(op, "%s", result(s));
        }
        return;
    }
    say(op, "EINVAL");
}

/* masked:PATH: "masked" if PATH cannot be opened, reads empty or (a directory) lists
 * nothing; else what it gave. */
static void masked(const char *op, const char *path)
{
    static char text[64];
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        say(op, "masked");
        return;
    }
    long n = 0;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = fdopendir(fd);
        struct dirent *entry;
        while (d && (entry = readdir(d)))
            n += strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0;
        if (d)
            closedir(d);
        else
            close(fd);
    } else {
        n = read(fd, text, sizeof text);
        close(fd);
    }
    if (n > 0)
        say(op, "readable:%ld", n);
    else
        say(op, "masked");
}

/* ---- the plain calls, one table for every ABI --------------------------------------------- */

static long plain(const char *name, int *known)
{
    static int own_ns = -2;
    if (own_ns == -2)
        own_ns = open("/proc/self/ns/uts", O_RDONLY);
    struct op ops[] = {
        {"mount", 165, 21, {P("none"), P("/tmp"), P("tmpfs"), 0, 0}},
        {"mount_bind", 165, 21, {P("/etc"), P("/tmp"), 0, 0x1000 /* MS_BIND */, 0}},
        {"umount", 166, 52, {P("/proc"), 2 /* MNT_DETACH */}},
        {"pivot_root", 155, 217, {P("."), P(".")}},
        {"mknod_chr", 133, 14, {P("/tmp/hjprobe-c"), S_IFCHR | 0600, makedev(1, 3)}},
        {"mknod_blk", 133, 14, {P("/tmp/hjprobe-b"), S_IFBLK | 0600, makedev(7, 0)}},
        {"init_module", 175, 128, {P(buf), 16, P("")}},
        {"delete_module", 176, 129, {P("hjprobe_none"), O_NONBLOCK}},
        {"reboot", 169, 88, {0xfee1dead, 672274793, 0x89ABCDEF /* CAD_ON */, 0}},
        {"clock_settime", 227, 264, {CLOCK_REALTIME, 0}},
        {"settimeofday", 164, 79, {0, P(zero_timezone)}},
        {"unshare_mnt", 272, 310, {0x00020000}},
        {"unshare_user", 272, 310, {0x10000000}},
        {"unshare_net", 272, 310, {0x40000000}},
        {"unshare_pid", 272, 310, {0x20000000}},
        {"setns_own", 308, 346, {own_ns, 0}},
        {"open_by_handle_at", 304, 342, {-100 /* AT_FDCWD */, P(&no_handle), O_RDONLY}},
        {"tiocsti", 16, 54, {0, 0x5412, P("x")}},
        {"raw_socket", 41, 359, {2, 3, 1}},
        {"packet_socket", 41, 359, {17, 3, 0}},
        {"bpf", 321, 357, {0 /* BPF_MAP_CREATE */, P(attr), sizeof attr}},
        {"perf_event_open", 298, 336, {P(attr), 0, -1, -1, 0}},
        {"kexec_load", 246, 283, {0, 0, 0, 0}},
        {"userfaultfd", 323, 374, {0}},
        {"keyctl", 250, 288, {0 /* GET_KEYRING_ID */, -3 /* session */, 0}},
        {"iopl", 172, 110, {3}},
        {"ioperm", 173, 101, {0x80, 1, 1}},
        {"swapon", 167, 87, {P("/tmp/hjprobe-own"), 0}},
        {"syslog", 103, 103, {3 /* READ_ALL */, P(buf), 16}},
        {"acct", 163, 51, {0}},
        {"write_proc_sys", 2, 5, {P("/proc/sys/kernel/domainname"), O_WRONLY}},
        {"write_sys", 2, 5, {P("/sys/kernel/profiling"), O_WRONLY}},
        {"sethostname", 170, 74, {P("hjprobe"), 7}},
        {"mlock", 149, 150, {P(buf), sizeof buf}},
        {"shmget", 29, 395, {0 /* IPC_PRIVATE */, 4096, 01600 /* IPC_CREAT|0600 */}},
        {"chown", 92, 212, {P("/tmp/hjprobe-own"), 1000, 1000}},
        {"chroot", 161, 61, {P("/tmp")}},
    };
    for (size_t j = 0; j < sizeof ops / sizeof ops[0]; j++) {
        if (strcmp(ops[j].name, name) != 0)
            continue;
        *known = 1;
        long a[5];
        memcpy(a, ops[j].a, sizeof a);
        if (strcmp(name, "clock_settime") == 0)
            a[1] = (int80 || sizeof(long) == 4) ? P(ts32) : P(ts64);
        long ret = call(ops[j].nr64, ops[j].nr32, a[0], a[1], a[2], a[3], a[4]);
        if (ret >= 0 && (strncmp(name, "write_", 6) == 0 || strcmp(name, "userfaultfd") == 0
                         || strcmp(name, "bpf") == 0 || strcmp(name, "perf_event_open") == 0
                         || strcmp(name, "raw_socket") == 0
                         || strcmp(name, "packet_socket") == 0))
            close((int)ret);
        return ret < 0 ? ret : 0;
    }
    *known = 0;
    return 0;
}

int main(int argc, char **argv)
{
    const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (strcmp(self, "hjsuid") == 0) { /* harmless: says who it runs as, nothing else */
        printf("%d\n", (int)geteuid());
        return 0;
    }
    if (argc < 4 || !inside_jail(argv[1])) {
        fprintf(stderr, "hjprobe: refusing to run outside the jail it was given\n");
        return REFUSED;
    }
#ifdef __i386__
    if (strncmp(argv[2], "int80", 5) == 0) {
        fprintf(stderr, "hjprobe: the 32-bit build makes its calls natively (ABI 64)\n");
        return 2;
    }
#else
    int80 = strncmp(argv[2], "int80", 5) == 0;
    by_socketcall = strcmp(argv[2], "int80s") == 0;
#endif
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ts64[0] = now.tv_sec;
    ts64[1] = now.tv_nsec;
    ts32[0] = (int)now.tv_sec;
    ts32[1] = (int)now.tv_nsec;
    socket_args[0] = 2; /* AF_INET, SOCK_RAW, IPPROTO_ICMP for socketcall */
    socket_args[1] = 3;
    socket_args[2] = 1;
    ((unsigned int *)attr)[1] = sizeof attr; /* perf_event_attr.size */
    close(open("/tmp/hjprobe-own", O_CREAT | O_WRONLY, 0600));

    for (int k = 3; k < argc; k++) {
        const char *op = argv[k];
        const char *arg = strchr(op, ':') ? strchr(op, ':') + 1 : "";
#define IS(prefix) (strncmp(op, prefix, strlen(prefix)) == 0)
        if (IS("read:"))
            say_read(op, sys_open(static_path(arg), O_RDONLY));
        else if (IS("dotdot:"))
            dotdot(op, arg);
        else if (IS("chroot2:"))
            chroot_twice(op, arg);
        else if (strcmp(op, "fds") == 0)
            leaked_fds(op);
        else if (IS("handle:"))
            by_handle(op, arg);
        else if (IS("sitin:"))
            sit_in(op, arg);
        else if (IS("pathflip:"))
            path_flip(op, arg);
        else if (strcmp(op, "nodename") == 0)
            nodename(op);
        else if (strcmp(op, "jailed") == 0)
            say(op, "%s", getenv("container") && strcmp(getenv("container"), "hyjail") == 0
                              ? "yes" : "no");
        else if (IS("bind:"))
            bind_to(op, arg, 0);
        else if (IS("bind6:"))
            bind_to(op, arg, 1);
        else if (IS("connect:"))
            connect_to(op, arg, 0);
        else if (IS("connect6:"))
            connect_to(op, arg, 1);
        else if (IS("devconnect:"))
            device_connect(op, arg);
        else if (IS("sendto:"))
            send_udp(op, arg, 0);
        else if (IS("sendmsg:"))
            send_udp(op, arg, 1);
        else if (IS("pktinfo:"))
            send_udp(op, arg, 2);
        else if (strcmp(op, "nl_link") == 0)
            netlink_request(op, RTM_NEWLINK);
        else if (strcmp(op, "nl_addr") == 0)
            netlink_request(op, RTM_NEWADDR);
        else if (strcmp(op, "nl_route") == 0)
            netlink_request(op, RTM_NEWROUTE);
        else if (IS("unspec:"))
            say(op, "%s", result(dissolve(arg)));
        else if (IS("pid:"))
            pid_call(op, arg);
        else if (IS("kill:")) { /* the tests' short form of pid:kill:PID */
            say(op, "%s", result(call(62, 37, atol(arg), 0, 0, 0, 0)));
        } else if (IS("ptrace:")) /* the tests' short form of pid:ptrace:PID */
            say(op, "%s", result(call(101, 26, 0x4206, atol(arg), 0, 0, 0)));
        else if (IS("race:"))
            sockaddr_race(op, arg);
        else if (IS("uconnect:"))
            abstract_call(op, arg, 0);
        else if (IS("uconnectd:"))
            abstract_call(op, arg, 1);
        else if (IS("usendmsg:"))
            abstract_call(op, arg, 2);
        else if (IS("uown:"))
            own_unix(op, arg);
        else if (IS("uflip:"))
            abstract_flip(op, arg);
        else if (IS("upeercred:"))
            peer_credentials(op, arg);
        else if (IS("fdswap:"))
            fd_swap(op, arg);
        else if (IS("storm:"))
            clone_storm(op, arg);
        else if (IS("vforkexec:"))
            vfork_exec(op, arg, argv[1], argv[2]);
        else if (strcmp(op, "threads") == 0)
            say(op, "%s", result(threads()));
        else if (IS("spoof:")) {
            /* spoof:SRC:DST: one ICMP echo from a forged IPv4 source (IP_HDRINCL). */
            char src[32] = {0};
            const char *dst = strchr(arg, ':');
            long ret = -EINVAL;
            if (dst && (size_t)(dst - arg) < sizeof src) {
                memcpy(src, arg, dst - arg);
                ret = spoof(src, dst + 1);
            }
            say(op, "%s", result(ret));
        } else if (IS("procscan:"))
            proc_scan(op, arg);
        else if (IS("swap:"))
            swap_loop(op, arg);
        else if (IS("cachewrite:"))
            cache_write(op, arg);
        else if (IS("family:"))
            family_socket(op, arg);
        else if (IS("mqueue:")) /* mq_open(NAME, O_RDONLY): a queue the host made */
            say(op, "%s", result(call(240, 277, P(static_path(arg)), O_RDONLY, 0, 0, 0)));
        else if (IS("masked:"))
            masked(op, arg);
        else if (IS("suid:"))
            setuid_regain(op, arg);
        else if (strcmp(op, "tty_tiocsti") == 0)
            tiocsti_on_the_terminal(op);
        else if (strcmp(op, "chattr_immutable") == 0)
            chattr_immutable(op);
        else if (strcmp(op, "socketcall_raw") == 0 && int80)
            say(op, "%s", result(call(102, 102, SC_SOCKET, P(socket_args), 0, 0, 0)));
        else if (strcmp(op, "tiocsti_high_bits") == 0 && !int80 && sizeof(long) == 8)
            say(op, "%s", result(call(16, 54, 0, (long)0x100005412LL, P("x"), 0, 0)));
        else {
            int known;
            long ret = plain(op, &known);
            if (known)
                say(op, "%s", result(ret));
            else
                say(op, "unknown");
        }
#undef IS
    }
    return 0;
}
