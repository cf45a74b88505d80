// Fiber contexts for the emulator (emu_fibers.h): make_context prepares a fiber that will run
// fn on its own stack, switch_context saves the running context and resumes another.
// glibc's swapcontext saves the signal mask with a system call and the FP environment on every
// switch, which made it 80% of the emulator's time; on x86-64 ELF a 14-instruction switch of
// the callee-saved registers does the same job here (no fiber changes the signal mask or the
// FP modes). Elsewhere the portable ucontext calls are used.
#pragma once
#include <ucontext.h>

#include <cstddef>
#include <cstdint>

#ifndef EMU_FAST_SWITCH  // -DEMU_FAST_SWITCH=0 forces the ucontext calls
#if defined(__x86_64__) && defined(__ELF__)
#define EMU_FAST_SWITCH 1
#else
#define EMU_FAST_SWITCH 0
#endif
#endif

#if EMU_FAST_SWITCH
// emu_switch_stack(&save_sp, sp): push the callee-saved registers, store rsp into save_sp,
// load sp, pop that context's registers and return into it. Weak: one copy per program.
extern "C" void emu_switch_stack(void** save_sp, void* sp);
asm(R"(
  .text
  .weak emu_switch_stack
  .type emu_switch_stack, @function
emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_stack, .-emu_switch_stack
)");
#endif

namespace emu::detail {

struct Context {
#if EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// A context that, when switched to, calls fn() on [stack, stack + size). fn must not return.
inline void make_context(Context& c, char* stack, size_t size, void (*fn)()) {
#if EMU_FAST_SWITCH
  // The first switch pops six zero registers, then "returns" into fn with rsp ≡ 8 (mod 16),
  // as after a call; fn's own return address is a null that is never used.
  auto* top = reinterpret_cast<std::uintptr_t*>((reinterpret_cast<std::uintptr_t>(stack) + size) & ~std::uintptr_t(15));
  *--top = 0;
  *--top = reinterpret_cast<std::uintptr_t>(fn);
  for (int r = 0; r < 6; ++r) *--top = 0;
  c.sp = top;
#else
  getcontext(&c.uc);
  c.uc.uc_stack = {stack, 0, size};
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fn, 0);
#endif
}

inline void switch_context(Context& from, Context& to) {
#if EMU_FAST_SWITCH
  emu_switch_stack(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

}  // namespace emu::detail
