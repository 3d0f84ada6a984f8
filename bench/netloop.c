/* N rounds of the socket calls the trace backend judges: a UDP socket bound to 127.0.0.1
 * (its port chosen by the kernel) and a TCP connect to a port where nothing listens. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    struct sockaddr_in local = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
    for (int i = 0; i < rounds; i++) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        bind(s, (struct sockaddr *)&local, sizeof local);
        close(s);
        struct sockaddr_in closed = local;
        closed.sin_port = htons(9); /* discard: nothing listens */
        s = socket(AF_INET, SOCK_STREAM, 0);
        connect(s, (struct sockaddr *)&closed, sizeof closed);
        close(s);
    }
    return 0;
}
