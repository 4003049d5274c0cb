#define _GNU_SOURCE
#include "cbench.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>
#include <stdint.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/syscall.h>

extern char **environ;

pid_t cbench_spawn(const char *path, char *const *argv, int channel_fd, int stdin_fd, int new_session) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
    if (channel_fd == 3) {
        /* dup2(3, 3) would be a no-op that leaves close-on-exec set: go via a spare slot. */
        posix_spawn_file_actions_adddup2(&actions, 3, 4);
        posix_spawn_file_actions_adddup2(&actions, 4, 3);
    } else {
        posix_spawn_file_actions_adddup2(&actions, channel_fd, 3);
    }
    posix_spawn_file_actions_addclosefrom_np(&actions, 4);
    /* In its own session, as privsep spawns its workers: where the kernel groups tasks
       by session for scheduling (autogroup), that is one scheduling group per client. */
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    if (new_session) posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) { errno = rc; return -1; }
    return pid;
}

/* Every thread of this process onto `set`: Swift's main actor runs on whichever
   dispatch thread drains the main queue, so pinning only the calling thread would
   leave the next job of the same code on another, unpinned thread. Threads started
   later inherit the mask of the thread that starts them. */
static int pin_process(const cpu_set_t *set) {
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks) return -1;
    int result = 0;
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        pid_t tid = (pid_t)atoi(entry->d_name);
        /* A thread that exits meanwhile (ESRCH) is no failure. */
        if (sched_setaffinity(tid, sizeof *set, set) != 0 && errno != ESRCH) result = -1;
    }
    closedir(tasks);
    return result;
}

/* `cpu`, or every CPU when cpu < 0. */
static cpu_set_t cpus_for(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= 0) {
        CPU_SET(cpu, &set);
    } else {
        long n = sysconf(_SC_NPROCESSORS_CONF);
        for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET(i, &set);
    }
    return set;
}

int cbench_pin(int cpu) {
    cpu_set_t set = cpus_for(cpu);
    return pin_process(&set);
}

int cbench_pin_except(int cpu) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    CPU_CLR(cpu, &set);
    return pin_process(&set);
}

int cbench_allowed_cpus(int *out, int capacity) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < capacity; cpu++) if (CPU_ISSET(cpu, &set)) out[count++] = cpu;
    return count;
}

int cbench_sched_batch(int on) {
    struct sched_param parameters = { .sched_priority = 0 };
    return sched_setscheduler(0, on ? SCHED_BATCH : SCHED_OTHER, &parameters);
}

uint64_t cbench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t cbench_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The first line of /proc/self/task/<tid>/<file> into `out`; 0, or -1. */
static int read_task_file(const char *tid, const char *file, char *out, size_t size) {
    char path[128];
    snprintf(path, sizeof path, "/proc/self/task/%s/%s", tid, file);
    FILE *stream = fopen(path, "re");
    if (!stream) return -1;
    char *line = fgets(out, (int)size, stream);
    fclose(stream);
    if (!line) return -1;
    out[strcspn(out, "\n")] = 0;
    return 0;
}

uint64_t cbench_named_threads_cpu_ns(const char *prefix) {
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks) return 0;
    uint64_t total = 0;
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char comm[64], schedstat[128];
        if (read_task_file(entry->d_name, "comm", comm, sizeof comm) != 0 || strncmp(comm, prefix, strlen(prefix)) != 0) continue;
        /* schedstat: time on the CPU (ns), time waiting to run, time slices. */
        if (read_task_file(entry->d_name, "schedstat", schedstat, sizeof schedstat) == 0) total += strtoull(schedstat, NULL, 10);
    }
    closedir(tasks);
    return total;
}

int cbench_echo_loop(int fd) {
    unsigned char data[8192];
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(253 * sizeof(int))]; } control;
    unsigned char reply[16] = {0};
    for (;;) {
        struct iovec iov = { data, sizeof data };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        if (n == 0) return 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                int fds[253];
                memcpy(fds, CMSG_DATA(c), (size_t)count * sizeof(int));
                for (int i = 0; i < count; i++) close(fds[i]);
            }
        }
        /* Nothing to attach: send, as privsep's echo replies. */
        while (send(fd, reply, sizeof reply, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
    }
}

int cbench_round_trips(int fd, int fd_count, int fd_to_send, int iterations, uint64_t *out_ns) {
    unsigned char request[16] = {1};
    unsigned char reply[64];
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(253 * sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    if (fd_count > 0) {
        struct msghdr tmp = { .msg_control = control.buf, .msg_controllen = CMSG_SPACE((size_t)fd_count * sizeof(int)) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&tmp);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)fd_count * sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < fd_count; i++) data[i] = fd_to_send;
    }
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        struct iovec iov = { request, sizeof request };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd_count > 0) {
            msg.msg_control = control.buf;
            msg.msg_controllen = CMSG_SPACE((size_t)fd_count * sizeof(int));
            while (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        } else {
            /* Nothing to attach: send, as privsep sends a message without fds. */
            while (send(fd, request, sizeof request, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        }
        struct iovec riov = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &riov, .msg_iovlen = 1 };
        for (;;) {
            ssize_t n = recvmsg(fd, &rmsg, MSG_CMSG_CLOEXEC);
            if (n >= 0) break;
            if (errno != EINTR) return -1;
        }
        out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}

int cbench_reply_fd_loop(int fd, int held_fd) {
    unsigned char data[8192];
    unsigned char reply[32] = {0};
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    for (;;) {
        struct iovec iov = { data, sizeof data };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        if (n == 0) return 0;
        memset(&control, 0, sizeof control);
        struct iovec out = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &out, .msg_iovlen = 1,
                               .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        struct cmsghdr *c = CMSG_FIRSTHDR(&rmsg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &held_fd, sizeof(int));
        while (sendmsg(fd, &rmsg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
    }
}

int cbench_request_fd_round_trips(int fd, int iterations, uint64_t *out_ns) {
    unsigned char request[40] = {3};
    unsigned char reply[64];
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        struct iovec iov = { request, sizeof request };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        while (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        struct iovec riov = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &riov, .msg_iovlen = 1,
                               .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        for (;;) {
            ssize_t n = recvmsg(fd, &rmsg, MSG_CMSG_CLOEXEC);
            if (n >= 0) break;
            if (errno != EINTR) return -1;
        }
        struct cmsghdr *c = CMSG_FIRSTHDR(&rmsg);
        if (c && c->cmsg_type == SCM_RIGHTS) {
            int received;
            memcpy(&received, CMSG_DATA(c), sizeof(int));
            close(received);
        }
        out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}

/* Serves requests from every fd in `fds` with poll() until every client has closed:
   each request (NUL-terminated in the buffer) goes to `handle`, whose fd is sent back
   with SCM_RIGHTS and closed, or whose errno goes back as 4 bytes. */
typedef int (*request_handler)(const char *request, ssize_t length, void *context);

/* Sends what `handle` answered: its fd with SCM_RIGHTS (then closed here), or the
   errno it left, as 4 bytes. */
static void send_answer(int fd, int answer) {
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    int error = answer < 0 ? errno : 0;
    struct iovec iov = { &error, sizeof error };
    struct msghdr reply = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (answer >= 0) {
        memset(&control, 0, sizeof control);
        reply.msg_control = control.buf;
        reply.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&reply);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &answer, sizeof(int));
    }
    while (sendmsg(fd, &reply, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
    if (answer >= 0) close(answer);
}

static int serve_fd_requests(const int *fds, int count, request_handler handle, void *context) {
    struct pollfd *polls = calloc((size_t)count, sizeof *polls);
    if (!polls) return -1;
    for (int i = 0; i < count; i++) { polls[i].fd = fds[i]; polls[i].events = POLLIN; }
    int open_clients = count;
    char request[4096];
    while (open_clients > 0) {
        if (poll(polls, (nfds_t)count, -1) < 0) { if (errno == EINTR) continue; free(polls); return -1; }
        for (int i = 0; i < count; i++) {
            if (polls[i].fd < 0 || !(polls[i].revents & (POLLIN | POLLHUP))) continue;
            ssize_t n = recv(polls[i].fd, request, sizeof request - 1, 0);
            if (n <= 0) { polls[i].fd = -1; open_clients--; continue; }
            request[n] = 0;
            send_answer(polls[i].fd, handle(request, n, context));
        }
    }
    free(polls);
    return 0;
}

/* serve_fd_requests on privsep's design: the clients in a level-triggered epoll set,
   and a client that is the only one ready read on (up to 32 requests) until EAGAIN,
   rather than one request per wake-up; with others ready, one request each. */
static int serve_fd_requests_epoll(const int *fds, int count, request_handler handle, void *context) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -1;
    for (int i = 0; i < count; i++) {
        struct epoll_event event = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &event) < 0) { close(ep); return -1; }
    }
    int open_clients = count;
    char request[4096];
    struct epoll_event events[64];
    while (open_clients > 0) {
        int ready = epoll_wait(ep, events, 64, -1);
        if (ready < 0) { if (errno == EINTR) continue; close(ep); return -1; }
        for (int e = 0; e < ready; e++) {
            int fd = fds[events[e].data.u32];
            for (int reads = ready > 1 ? 1 : 32; reads > 0; reads--) {
                ssize_t n = recv(fd, request, sizeof request - 1, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
                if (n <= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); open_clients--; break; }
                request[n] = 0;
                send_answer(fd, handle(request, n, context));
            }
        }
    }
    close(ep);
    return 0;
}

static int open_request(const char *name, ssize_t length, void *context) {
    (void)length;
    return openat(*(const int *)context, name, O_RDONLY | O_CLOEXEC);
}

int cbench_open_broker(const int *fds, int count, int directory) {
    return serve_fd_requests(fds, count, open_request, &directory);
}

/* The checks privsep's broker makes for the benchmark's rule (a directory rule,
   read, symlinks refused), in C: resolution confined beneath the directory with no
   symlinks or magic links, opened non-blocking (a FIFO must not hang the broker),
   then fstat for the file type and the device. (privsep looks further, with fstatfs
   for procfs, only for a file on another device than its rule's directory; this
   broker refuses those, which never happens in the benchmark.) */
struct checked_directory { int fd; dev_t device; };

static int checked_open_request(const char *name, ssize_t length, void *context) {
    (void)length;
    const struct checked_directory *directory = context;
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS };
    int fd = (int)syscall(SYS_openat2, directory->fd, name, &how, sizeof how);
    if (fd < 0) return -1;
    struct stat status;
    /* fstat(2) itself, as privsep calls it (glibc's fstat is newfstatat). */
    if (syscall(SYS_fstat, fd, &status) < 0) { int saved = errno; close(fd); errno = saved; return -1; }
    if (!(S_ISREG(status.st_mode) || S_ISDIR(status.st_mode)) || status.st_dev != directory->device) {
        close(fd);
        errno = EACCES;
        return -1;
    }
    return fd;
}

int cbench_checked_open_broker(const int *fds, int count, int directory, int on_epoll) {
    struct stat status;
    if (fstat(directory, &status) < 0) return -1;
    struct checked_directory context = { directory, status.st_dev };
    return (on_epoll ? serve_fd_requests_epoll : serve_fd_requests)(fds, count, checked_open_request, &context);
}

/* One broker thread: the clients it serves, where it runs, what it serves, and
   what it cost. */
struct broker_thread {
    pthread_t thread;
    int *fds;
    int count;
    int cpu;              /* -1: wherever the thread creating it may run */
    enum cbench_broker kind;
    int directory;
    int result;
    uint64_t cpu_ns;      /* the thread's CPU time while serving */
};

struct cbench_brokers {
    struct broker_thread *threads;
    int thread_count;
    int *partitioned;
};

static void *serve_broker_thread(void *argument) {
    struct broker_thread *broker = argument;
    pthread_setname_np(pthread_self(), "c-broker"); /* for profiles: privsep's are "privsep-loop" */
    if (broker->cpu >= 0 && cbench_pin_thread(broker->cpu) != 0) { broker->result = -1; return NULL; }
    uint64_t before = cbench_thread_cpu_ns();
    switch (broker->kind) {
    case CBENCH_OPEN_BROKER: broker->result = cbench_open_broker(broker->fds, broker->count, broker->directory); break;
    case CBENCH_CHECKED_OPEN_BROKER: broker->result = cbench_checked_open_broker(broker->fds, broker->count, broker->directory, 0); break;
    case CBENCH_EPOLL_CHECKED_OPEN_BROKER:
        broker->result = cbench_checked_open_broker(broker->fds, broker->count, broker->directory, 1);
        break;
    case CBENCH_CONNECT_BROKER: broker->result = cbench_connect_broker(broker->fds, broker->count); break;
    }
    broker->cpu_ns = cbench_thread_cpu_ns() - before;
    return NULL;
}

struct cbench_brokers *cbench_start_brokers(enum cbench_broker kind, const int *fds, int count, int directory,
                                            const int *cpus, int cpu_count) {
    if (cpu_count < 1 || count < 1) { errno = EINVAL; return NULL; }
    int threads = cpu_count < count ? cpu_count : count;
    struct cbench_brokers *brokers = calloc(1, sizeof *brokers);
    if (!brokers) return NULL;
    brokers->threads = calloc((size_t)threads, sizeof *brokers->threads);
    brokers->partitioned = calloc((size_t)count, sizeof *brokers->partitioned);
    if (!brokers->threads || !brokers->partitioned) { cbench_join_brokers(brokers, NULL); errno = ENOMEM; return NULL; }
    int next = 0;
    for (int t = 0; t < threads; t++) {
        struct broker_thread *broker = &brokers->threads[t];
        *broker = (struct broker_thread){ .fds = brokers->partitioned + next, .cpu = cpus[t], .kind = kind, .directory = directory };
        for (int i = t; i < count; i += threads) brokers->partitioned[next++] = fds[i];
        broker->count = (int)(brokers->partitioned + next - broker->fds);
        if (pthread_create(&broker->thread, NULL, serve_broker_thread, broker) != 0) {
            /* The threads started serve until their clients close: leave them (and what
               they use) be; the caller gives up the measurement. */
            for (int started = 0; started < t; started++) pthread_detach(brokers->threads[started].thread);
            errno = EAGAIN;
            return NULL;
        }
        brokers->thread_count = t + 1;
    }
    return brokers;
}

int cbench_join_brokers(struct cbench_brokers *brokers, uint64_t *cpu_ns) {
    int result = 0;
    uint64_t total = 0;
    for (int t = 0; t < brokers->thread_count; t++) {
        pthread_join(brokers->threads[t].thread, NULL);
        if (brokers->threads[t].result != 0) result = -1;
        total += brokers->threads[t].cpu_ns;
    }
    if (cpu_ns) *cpu_ns = total;
    free(brokers->threads);
    free(brokers->partitioned);
    free(brokers);
    return result;
}

int cbench_pin_thread(int cpu) {
    cpu_set_t set = cpus_for(cpu);
    return sched_setaffinity(0, sizeof set, &set);
}

/* Receives one reply of a serve_fd_requests broker (or privsep's REPLY) and closes the
   fd it carries; a reply without one fails with its errno. */
static int receive_fd_reply(int fd) {
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    int error = 0;
    struct iovec iov = { &error, sizeof error };
    struct msghdr reply = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    while (recvmsg(fd, &reply, MSG_CMSG_CLOEXEC) < 0) { if (errno != EINTR) return -1; }
    struct cmsghdr *c = CMSG_FIRSTHDR(&reply);
    if (c && c->cmsg_type == SCM_RIGHTS) {
        int received;
        memcpy(&received, CMSG_DATA(c), sizeof(int));
        close(received);
        return 0;
    }
    errno = error ? error : EPROTO;
    return -1;
}

/* `iterations` round trips of `request` to a serve_fd_requests broker, closing
   each fd that comes back; a refusal ends the loop with its errno. */
static int request_fd_round_trips(int fd, const void *request, size_t length, int iterations, uint64_t *out_ns) {
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        while (send(fd, request, length, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        if (receive_fd_reply(fd) < 0) return -1;
        if (out_ns) out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}

int cbench_batched_requests(int fd, const void *request, size_t length, int batch, int batches) {
    for (int b = 0; b < batches; b++) {
        for (int i = 0; i < batch; i++) {
            while (send(fd, request, length, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        }
        /* Sharing a CPU with the broker: sleep while it serves the whole batch (0.2 ms,
           several times what 8 requests take), so its replies find this runnable, not
           blocked in recvmsg: woken by each reply, this would preempt the broker each
           time, as a round trip does. (Yielding is not enough: the scheduler may run this
           again before the broker is done.) */
        struct timespec pause = { 0, 200000 };
        /* A batch of one is a plain round trip (the opens/s rows' C-code clients of privsep). */
        if (batch > 1) while (nanosleep(&pause, &pause) < 0 && errno == EINTR) {}
        for (int i = 0; i < batch; i++) {
            if (receive_fd_reply(fd) < 0) return -1;
        }
    }
    return 0;
}

int cbench_open_client(int fd, const char *name, int iterations, uint64_t *out_ns) {
    return request_fd_round_trips(fd, name, strlen(name), iterations, out_ns);
}

int cbench_direct_opens(int directory, const char *name, int iterations, uint64_t *out_ns) {
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        int file = openat(directory, name, O_RDONLY | O_CLOEXEC);
        if (file < 0) return -1;
        close(file);
        out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}

static void *accept_forever(void *argument) {
    int listener = (int)(intptr_t)argument;
    for (;;) {
        int connection = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (connection >= 0) close(connection);
    }
    return NULL;
}

int cbench_loopback_listener(void) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) return -1;
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0 ||
        getsockname(listener, (struct sockaddr *)&address, &length) < 0) {
        close(listener);
        return -1;
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, accept_forever, (void *)(intptr_t)listener) != 0) return -1;
    pthread_detach(thread);
    return ntohs(address.sin_port);
}

static int connect_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    while (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        if (errno != EINTR) { int saved = errno; close(fd); errno = saved; return -1; }
    }
    return fd;
}

int cbench_direct_connects(int port, int iterations, uint64_t *out_ns) {
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        int fd = connect_loopback(port);
        if (fd < 0) return -1;
        close(fd);
        out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}

static int connect_request(const char *request, ssize_t length, void *context) {
    (void)context;
    uint16_t port = 0;
    if (length != sizeof port) { errno = EINVAL; return -1; }
    memcpy(&port, request, sizeof port);
    return connect_loopback(port);
}

int cbench_connect_broker(const int *fds, int count) {
    return serve_fd_requests(fds, count, connect_request, NULL);
}

int cbench_connect_client(int fd, int port, int iterations, uint64_t *out_ns) {
    uint16_t request = (uint16_t)port;
    return request_fd_round_trips(fd, &request, sizeof request, iterations, out_ns);
}

/* The worker's side of a brokered open with its reply queued beforehand (see the
   privsep-bench "worker-path" child): for each request, the "supervisor" end `peer`
   queues a REPLY carrying `held` (its request id patched in), then the worker end
   `mine` sends the request, receives the reply, closes the fd, and the peer drains the
   request. Nothing sleeps, so the time is the syscalls' and the code's, not the
   scheduler's. */

/* Queues `reply` (a REPLY message, its request id set to `id`) with `held` on `peer`: 0 or -1. */
int cbench_queue_reply(int peer, int held, void *reply, size_t reply_length, uint64_t id) {
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    memcpy((unsigned char *)reply + 16, &id, sizeof id); /* the header's request id */
    memset(&control, 0, sizeof control);
    struct iovec iov = { reply, reply_length };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &held, sizeof(int));
    return sendmsg(peer, &message, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* Reads and drops the request the worker end sent: 0 or -1. */
int cbench_drain_request(int peer) {
    unsigned char request[8192];
    return recv(peer, request, sizeof request, 0) < 0 ? -1 : 0;
}

/* One request from `mine` and its reply (its fd closed): what a C worker does per open.
   0 or -1. */
static int request_and_reply(int mine, const void *request, size_t request_length) {
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    unsigned char received[8192];
    /* send, not sendmsg: nothing to attach (as privsep's worker sends a request). */
    if (send(mine, request, request_length, MSG_NOSIGNAL) < 0) return -1;
    struct iovec in = { received, sizeof received };
    struct msghdr message = { .msg_iov = &in, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    if (recvmsg(mine, &message, MSG_CMSG_CLOEXEC) < 0) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
        close(fd);
    }
    return 0;
}

/* `iterations` requests from `mine` in C, each finding its reply queued: the total
   nanoseconds, or 0 on an error. */
uint64_t cbench_prequeued_requests(int mine, int peer, int held, const void *request, size_t request_length,
                                   void *reply, size_t reply_length, int iterations) {
    uint64_t start = cbench_now_ns();
    for (int i = 1; i <= iterations; i++) {
        if (cbench_queue_reply(peer, held, reply, reply_length, (uint64_t)i) != 0) return 0;
        if (request_and_reply(mine, request, request_length) != 0) return 0;
        if (cbench_drain_request(peer) != 0) return 0;
    }
    return cbench_now_ns() - start;
}

/* Made on first use: 2048 pages, each holding one jump to the next (at a different cache
   set on each page) and the last a return. */
static void (*evict_code)(void);

void cbench_evict(const void *buffer, size_t size) {
    const volatile unsigned char *bytes = buffer;
    unsigned sum = 0;
    for (size_t offset = 0; offset < size; offset += 64) sum += bytes[offset];
    __asm__ volatile("" : : "r"(sum));
    if (!evict_code) {
        size_t pages = 2048;
        unsigned char *code = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (code == MAP_FAILED) abort();
        for (size_t page = 0; page < pages; page++) {
            unsigned char *at = code + page * 4096 + (page % 64) * 64;
            if (page + 1 == pages) { at[0] = 0xC3; break; }
            unsigned char *next = code + (page + 1) * 4096 + ((page + 1) % 64) * 64;
            int32_t rel = (int32_t)(next - (at + 5));
            at[0] = 0xE9;
            memcpy(at + 1, &rel, 4);
        }
        if (mprotect(code, pages * 4096, PROT_READ | PROT_EXEC) != 0) abort();
        evict_code = (void (*)(void))code;
    }
    evict_code();
}

uint64_t cbench_prequeued_cold_requests(int mine, int peer, int held, const void *request, size_t request_length,
                                        void *reply, size_t reply_length, int iterations,
                                        const void *evict, size_t evict_size) {
    uint64_t total = 0;
    for (int i = 1; i <= iterations; i++) {
        if (cbench_queue_reply(peer, held, reply, reply_length, (uint64_t)i) != 0) return 0;
        cbench_evict(evict, evict_size);
        uint64_t start = cbench_now_ns();
        if (request_and_reply(mine, request, request_length) != 0) return 0;
        total += cbench_now_ns() - start;
        if (cbench_drain_request(peer) != 0) return 0;
    }
    return total;
}


void cbench_touch(void *p) { *(volatile unsigned char *)p = 1; }

int cbench_marked_request(int mine, const void *request, size_t request_length, void *marker) {
    cbench_touch(marker);
    int result = request_and_reply(mine, request, request_length);
    cbench_touch((unsigned char *)marker + 64);
    return result;
}
