/* libnss_evil.so.2: the NSS module a hostile jail plants (with "passwd: evil files" in its
 * /etc/nsswitch.conf) for a host process that looks a user up by name inside the jail.
 *
 * The escape battery installs it in a jail's root. Loaded at all by a process that still holds
 * host powers, it could do anything with them; it only writes what it was loaded with (the
 * effective capabilities, the seccomp mode, no_new_privs, the uid) to /tmp/hjnss.PID of the
 * root it finds itself in, and only in a root hyjail built (/etc/hyjail-root), so that the
 * host can tell whether the jail's code ran before confinement. It defines no lookup: glibc
 * then goes on to "files".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

__attribute__((constructor)) static void loaded(void)
{
    struct { unsigned int version; int pid; } header = {0x20080522 /* v3 */, 0};
    struct { unsigned int effective, permitted, inheritable; } data[2] = {{0}};
    char path[64], line[160];
    if (access("/etc/hyjail-root", F_OK) != 0)
        return;
    syscall(SYS_capget, &header, data);
    snprintf(path, sizeof path, "/tmp/hjnss.%d", (int)getpid());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    int n = snprintf(line, sizeof line, "CapEff=%08x%08x Seccomp=%d NoNewPrivs=%d uid=%d\n",
                     data[1].effective, data[0].effective, prctl(PR_GET_SECCOMP, 0, 0, 0, 0),
                     prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), (int)getuid());
    if (write(fd, line, (size_t)n) != n)
        unlink(path);
    close(fd);
}
