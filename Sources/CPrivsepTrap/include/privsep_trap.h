/*
 * privsep_trap.h: the SIGSYS reporter of a locked-down worker.
 *
 * This is C because it runs inside a signal handler: it must be
 * async-signal-safe, which Swift code (retains, allocation, exclusivity
 * checks) cannot promise.
 */
#ifndef PRIVSEP_TRAP_H
#define PRIVSEP_TRAP_H

#pragma clang assume_nonnull begin

/* Installs a SIGSYS handler that, when the seccomp filter traps a system call
   (SECCOMP_RET_TRAP), sends a VIOLATION message (syscall number, arch,
   instruction pointer, arguments) on `channel_fd` and ends the process with
   status 159 (128 + SIGSYS). The report is sent only while `channel_fd` is still
   the socket it was at install (same device and inode). Returns 0, or -1 with
   errno set. */
int privsep_install_violation_reporter(int channel_fd);

#pragma clang assume_nonnull end

#endif
