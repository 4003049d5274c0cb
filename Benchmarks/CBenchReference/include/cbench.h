/* The C reference for privsep-bench: the same round trip as the Swift channel,
   written with plain sendmsg/recvmsg, measured in the same run. */
#ifndef CBENCH_H
#define CBENCH_H

#include <stdint.h>
#include <sys/types.h>

#pragma clang assume_nonnull begin

/* Spawns `path` with `argv` (NULL-terminated), with `channel_fd` at fd 3,
   `stdin_fd` as its stdin (unless -1) and every other fd above 2 closed; with
   `new_session`, in a session of its own (setsid), as privsep's workers are.
   Returns the pid, or -1 with errno set. */
pid_t cbench_spawn(const char *path, char *_Nullable const *_Nonnull argv, int channel_fd, int stdin_fd, int new_session);

/* Pins every thread of this process (and threads and children started after) to
   `cpu`, or to every CPU when cpu < 0. Returns 0 or -1 with errno set. */
int cbench_pin(int cpu);
/* Moves every thread of this process onto the calling thread's CPUs but `cpu`. */
int cbench_pin_except(int cpu);
/* The CPUs the calling thread may use, lowest first, into `out` (at most `capacity`);
   returns how many, or -1 with errno set. */
int cbench_allowed_cpus(int *out, int capacity);
/* Switches the calling thread to SCHED_BATCH (on) or back to SCHED_OTHER; children it spawns inherit it. */
int cbench_sched_batch(int on);

/* Child side: receive a message (up to 253 fds), close its fds, reply with 16
   bytes; until end-of-file. Returns 0 at EOF, -1 on error. */
int cbench_echo_loop(int fd);

/* Parent side: `iterations` round trips sending 16 bytes and `fd_count` copies
   of `fd_to_send`, waiting for the 16-byte reply; each round trip's duration
   in nanoseconds goes to `out_ns`. Returns 0 or -1 with errno set. */
int cbench_round_trips(int fd, int fd_count, int fd_to_send, int iterations, uint64_t *out_ns);

/* Child side of a minimal C broker: for each request (any bytes, no fds) reply
   with 32 bytes and a copy of `held_fd`; until end-of-file. */
int cbench_reply_fd_loop(int fd, int held_fd);

/* Parent side of the minimal C broker: send a 40-byte request, receive the
   32-byte reply and its fd, close the fd. */
int cbench_request_fd_round_trips(int fd, int iterations, uint64_t *out_ns);
/* The client of the serving side's row: `batches` rounds of `batch` copies of
   `request` sent back to back, then their `batch` replies received, each fd closed.
   A broker on the same CPU then serves requests already queued, with few context
   switches: the client sleeps meanwhile, so the replies find it runnable, not asleep
   (a batch fits the socket's queue: net.unix.max_dgram_qlen is 10 by default). */
int cbench_batched_requests(int fd, const void *request, size_t length, int batch, int batches);

/* The worker's side of a brokered open, its reply queued beforehand (no scheduling). */
int cbench_queue_reply(int peer, int held, void *reply, size_t reply_length, uint64_t id);
int cbench_drain_request(int peer);
uint64_t cbench_prequeued_requests(int mine, int peer, int held, const void *request, size_t request_length,
                                   void *reply, size_t reply_length, int iterations);
/* Reads every cache line of `buffer` (`size` bytes), then jumps through 2048 pages of
   code: evicts the caller's data and instruction caches and TLB entries, as a run of other
   processes on its CPU does. */
void cbench_evict(const void *buffer, size_t size);
/* Writes one byte at `p`: a mark in a memory trace (Benchmarks/footprint). */
void cbench_touch(void *p);
/* One request and its reply, as cbench_prequeued_requests makes them, between writes to
   `marker` and `marker` + 64. 0 or -1. */
int cbench_marked_request(int mine, const void *request, size_t request_length, void *marker);
/* cbench_prequeued_requests with the caches evicted (cbench_evict) before each request:
   the nanoseconds spent in the requests alone, or 0 on an error. */
uint64_t cbench_prequeued_cold_requests(int mine, int peer, int held, const void *request, size_t request_length,
                                        void *reply, size_t reply_length, int iterations,
                                        const void *evict, size_t evict_size);

/* A minimal C open broker: serves requests from every fd in `fds` (each request
   is a file name, answered with openat(directory, name, O_RDONLY|O_CLOEXEC) as an
   fd, or 4 bytes of errno), with poll(), until every client has closed.
   Returns 0, or -1 with errno set. */
int cbench_open_broker(const int *fds, int count, int directory);

/* The same broker making the checks privsep's broker makes for a directory rule
   that refuses symlinks: openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
   RESOLVE_NO_SYMLINKS and O_NONBLOCK, then fstat: a regular file or directory on
   the directory's own device, or EACCES. With `on_epoll`, served as privsep's loop
   serves (an epoll set; a client alone ready is read on until EAGAIN). */
int cbench_checked_open_broker(const int *fds, int count, int directory, int on_epoll);

/* Brokers on threads of their own, as privsep's serving threads are, so that the
   thread that starts the clients is never the one serving them. */
enum cbench_broker { CBENCH_OPEN_BROKER, CBENCH_CHECKED_OPEN_BROKER, CBENCH_EPOLL_CHECKED_OPEN_BROKER, CBENCH_CONNECT_BROKER };
struct cbench_brokers;

/* Starts one broker thread per entry of `cpus` (at most one per client), each
   serving the clients whose index i has i % threads == its own index, until they
   have all closed; a thread is pinned to its entry unless that is -1. With several
   pinned threads, this is Placement.colocated in C. Returns at once (NULL with errno
   set if a thread could not start). */
struct cbench_brokers *_Nullable cbench_start_brokers(enum cbench_broker kind, const int *fds, int count, int directory,
                                                       const int *cpus, int cpu_count);
/* Waits for the brokers to finish; their CPU time while serving, summed, goes to
   `cpu_ns` when it is not NULL. Returns 0, or -1 if any failed. Frees `brokers`. */
int cbench_join_brokers(struct cbench_brokers *brokers, uint64_t *_Nullable cpu_ns);

/* Moves only the calling thread onto `cpu`, or onto every CPU when cpu < 0; the
   processes it spawns start there. */
int cbench_pin_thread(int cpu);

/* A C client of that broker: `iterations` requests for `name`, closing each fd it
   gets; each round trip's duration goes to out_ns when it is not NULL. */
int cbench_open_client(int fd, const char *name, int iterations, uint64_t *_Nullable out_ns);

/* The same opens without a broker: openat(directory, name) and close, timed. */
int cbench_direct_opens(int directory, const char *name, int iterations, uint64_t *out_ns);

/* A TCP listener on 127.0.0.1 (port chosen by the kernel) with a thread that
   accepts and closes connections forever. Returns the port, or -1. */
int cbench_loopback_listener(void);

/* connect(2) to 127.0.0.1:port on a new socket and close it, timed. */
int cbench_direct_connects(int port, int iterations, uint64_t *out_ns);

/* A minimal C connect broker: each request is a 2-byte port; the answer is a
   TCP socket connected (blocking) to 127.0.0.1:port, or 4 bytes of errno.
   Serves every fd in `fds` with poll() until every client has closed. */
int cbench_connect_broker(const int *fds, int count);

/* A C client of that broker: `iterations` connects to `port`, closing each
   socket it gets; durations to out_ns when it is not NULL. */
int cbench_connect_client(int fd, int port, int iterations, uint64_t *_Nullable out_ns);

/* The calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID) in nanoseconds. */
uint64_t cbench_thread_cpu_ns(void);
/* The CPU time so far, in nanoseconds, of every thread of this process whose name
   starts with `prefix` (/proc/self/task/N/comm and .../schedstat). */
uint64_t cbench_named_threads_cpu_ns(const char *prefix);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t cbench_now_ns(void);

#pragma clang assume_nonnull end

#endif
