"""Counters that the threads of one parallel region share: tasks taken in order
from one queue, and the wait at the end of a phase.

A parallel driver runs one region per call: each thread takes the next task
(a number) from a counter, runs it and counts it done on another, until none is
left.  Tasks are numbered phase by phase (the packing of the weights, the
examples' blocks, the weight-gradient tasks; the gradient driver interleaves
the last two chunk by chunk), and a task waits only for tasks numbered before
it: the packing for a block (the done count reaches its phase's first task),
a chunk's blocks for its weight-gradient tasks (a count per chunk).  Every task writes its own part of the
result, so the result is the same whichever thread runs a task and in whatever
order they finish; a thread that arrives late (woken after idle time, or
sharing its core with another library's spinning threads) takes whatever is
left instead of a fixed share that the others would wait for.

No thread waits for a task nobody has taken: tasks are taken in order, so when
a thread waits, every task of the earlier phases is in the hands of a thread
that is running it (or done), and the earliest unfinished task's thread waits
for nobody.  With any number of threads, and with a threading layer that runs
the region's iterations one after another on one thread, the queue empties.

The counters are two values of the drivers' scratch (a float array) read as
integers of the same width: float64 values as int64, float32 values as int32.
"""

from __future__ import annotations

import os
import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import ERROR_MODEL

# the scratch values that hold the counters (scratch[0] is the gradient drivers'
# finite flag; the packed weights start at 16: plan.layout_table)
TAKEN, DONE = 4, 8
# spins of a waiting thread before it gives its core away each time it looks
SPINS = 2000

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_POSIX = os.name == "posix"


def _counter(context, builder, ary_type, ary, index):
    """The address of ``ary[index]`` as an integer as wide as the element."""
    data = context.make_array(ary_type)(context, builder, ary).data
    ptr = builder.gep(data, [index])
    return builder.bitcast(ptr, ir.IntType(ary_type.dtype.bitwidth).as_pointer())


def _checked(scratch, index):
    return (isinstance(scratch, types.Array) and isinstance(scratch.dtype, types.Float)
            and isinstance(index, types.Integer))


@intrinsic
def take(typingctx, scratch, index):
    """The counter at ``scratch[index]`` before adding 1 to it, as one atomic
    step (sequentially consistent: what the thread wrote before is visible to
    a thread that sees the new count)."""
    if not _checked(scratch, index):
        return None

    def codegen(context, builder, sig, args):
        ptr = _counter(context, builder, sig.args[0], args[0], args[1])
        one = ir.Constant(ptr.type.pointee, 1)
        old = builder.atomic_rmw("add", ptr, one, "seq_cst")
        return builder.sext(old, ir.IntType(64))

    return types.int64(scratch, index), codegen


@intrinsic
def count(typingctx, scratch, index):
    """The counter at ``scratch[index]``, read atomically (acquire: what the
    threads that counted it wrote before is visible after)."""
    if not _checked(scratch, index):
        return None

    def codegen(context, builder, sig, args):
        ptr = _counter(context, builder, sig.args[0], args[0], args[1])
        value = builder.load_atomic(ptr, "acquire", sig.args[0].dtype.bitwidth // 8)
        return builder.sext(value, ir.IntType(64))

    return types.int64(scratch, index), codegen


@intrinsic
def reset(typingctx, scratch, index):
    """The counter at ``scratch[index]`` set to 0 (before the region starts)."""
    if not _checked(scratch, index):
        return None

    def codegen(context, builder, sig, args):
        ptr = _counter(context, builder, sig.args[0], args[0], args[1])
        builder.store_atomic(ir.Constant(ptr.type.pointee, 0), ptr, "seq_cst",
                             sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(scratch, index), codegen


@intrinsic
def _relax(typingctx):
    """One step of a spin wait: x86's ``pause`` (it tells the core the loop
    waits on memory), nothing elsewhere."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", [], ir.FunctionType(
                ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _give_way(typingctx):
    """``sched_yield()`` (POSIX; nothing elsewhere): the waiting thread's core to whichever thread the
    operating system has waiting for it (the one that holds the awaited task
    may be that one, when there are more threads than free cores)."""

    def codegen(context, builder, sig, args):
        if _POSIX:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@njit(inline="always", error_model=ERROR_MODEL)
def wait_for(scratch, index, target):
    """Until the counter at ``scratch[index]`` reaches ``target``: spin
    ``SPINS`` times, then give the core away, and look again."""
    while count(scratch, index) < target:
        for _ in range(SPINS):
            _relax()
            if count(scratch, index) >= target:
                return
        _give_way()
