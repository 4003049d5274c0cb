#define _GNU_SOURCE
#include "privsep_trap.h"
#include "privsep_protocol.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

static volatile int violation_channel = -1;
/* The channel's identity when the reporter was installed. The fd number alone is not
   the channel: if the worker frees its connection, the number is reused by whatever it
   opens next (an accepted client, say), and a report sent there would hand that peer
   the call's instruction pointer and arguments (addresses). */
static volatile dev_t violation_channel_device;
static volatile ino_t violation_channel_inode;

/* Only raw syscalls (newfstatat, sendmsg, exit_group) and stack memory: async-signal-safe,
   and all three are in every lockdown profile's baseline. */
static void report_violation(int signal, siginfo_t *info, void *context) {
    (void)signal;
    struct {
        struct privsep_header header;
        struct privsep_violation violation;
    } message;
    memset(&message, 0, sizeof message);
    message.header.magic = PRIVSEP_MAGIC;
    message.header.version = PRIVSEP_VERSION;
    message.header.type = PRIVSEP_VIOLATION;
    message.header.length = sizeof message.violation;
    message.violation.syscall_nr = info->si_syscall;
    message.violation.arch = info->si_arch;
    message.violation.instruction_pointer = (uint64_t)(uintptr_t)info->si_call_addr;
#if defined(__x86_64__)
    const ucontext_t *uc = context;
    const greg_t *regs = uc->uc_mcontext.gregs;
    message.violation.args[0] = (uint64_t)regs[REG_RDI];
    message.violation.args[1] = (uint64_t)regs[REG_RSI];
    message.violation.args[2] = (uint64_t)regs[REG_RDX];
    message.violation.args[3] = (uint64_t)regs[REG_R10];
    message.violation.args[4] = (uint64_t)regs[REG_R8];
    message.violation.args[5] = (uint64_t)regs[REG_R9];
#elif defined(__aarch64__)
    const ucontext_t *uc = context;
    for (int i = 0; i < 6; i++) message.violation.args[i] = uc->uc_mcontext.regs[i];
#else
    (void)context;
#endif
    struct iovec iov = { &message, sizeof message };
    struct msghdr header = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct stat now;
    if (violation_channel >= 0
        && syscall(SYS_newfstatat, violation_channel, "", &now, AT_EMPTY_PATH) == 0
        && now.st_dev == violation_channel_device && now.st_ino == violation_channel_inode)
        syscall(SYS_sendmsg, violation_channel, &header, MSG_NOSIGNAL);
    syscall(SYS_exit_group, 128 + SIGSYS);
}

int privsep_install_violation_reporter(int channel_fd) {
    struct stat channel;
    if (fstat(channel_fd, &channel) != 0) return -1;
    violation_channel_device = channel.st_dev;
    violation_channel_inode = channel.st_ino;
    violation_channel = channel_fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = report_violation;
    action.sa_flags = SA_SIGINFO;
    sigfillset(&action.sa_mask); /* nothing interrupts the report */
    return sigaction(SIGSYS, &action, NULL);
}
