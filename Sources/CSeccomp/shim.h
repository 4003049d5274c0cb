/* libseccomp, plus fixed-arity forms of the variadic seccomp_rule_add, which
   Swift cannot call, and the action macros as constants. No logic. */
#include <seccomp.h>

static const uint32_t privsep_SCMP_ACT_KILL_PROCESS = SCMP_ACT_KILL_PROCESS;
static const uint32_t privsep_SCMP_ACT_TRAP = SCMP_ACT_TRAP;
static const uint32_t privsep_SCMP_ACT_ALLOW = SCMP_ACT_ALLOW;
static const uint32_t privsep_SCMP_ACT_LOG = SCMP_ACT_LOG;
static const uint32_t privsep_SCMP_ACT_NOTIFY = SCMP_ACT_NOTIFY;
static inline uint32_t privsep_scmp_act_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }
static const uint32_t privsep_SCMP_ARCH_NATIVE = SCMP_ARCH_NATIVE;

static inline int privsep_seccomp_rule_add_always(scmp_filter_ctx ctx, uint32_t action, int syscall) {
    return seccomp_rule_add(ctx, action, syscall, 0);
}
static inline int privsep_seccomp_rule_add_eq(scmp_filter_ctx ctx, uint32_t action, int syscall,
                                              unsigned int arg, uint64_t value) {
    return seccomp_rule_add(ctx, action, syscall, 1, SCMP_CMP(arg, SCMP_CMP_EQ, value));
}
static inline int privsep_seccomp_rule_add_masked_eq2(scmp_filter_ctx ctx, uint32_t action, int syscall,
                                                      unsigned int arg1, uint64_t mask1, uint64_t value1,
                                                      unsigned int arg2, uint64_t mask2, uint64_t value2) {
    return seccomp_rule_add(ctx, action, syscall, 2, SCMP_CMP(arg1, SCMP_CMP_MASKED_EQ, mask1, value1),
                            SCMP_CMP(arg2, SCMP_CMP_MASKED_EQ, mask2, value2));
}
static inline int privsep_seccomp_rule_add_masked_eq(scmp_filter_ctx ctx, uint32_t action, int syscall,
                                                     unsigned int arg, uint64_t mask, uint64_t value) {
    return seccomp_rule_add(ctx, action, syscall, 1, SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, mask, value));
}
static inline int privsep_seccomp_rule_add_ne(scmp_filter_ctx ctx, uint32_t action, int syscall,
                                              unsigned int arg, uint64_t value) {
    return seccomp_rule_add(ctx, action, syscall, 1, SCMP_CMP(arg, SCMP_CMP_NE, value));
}
