//! The CPU: state, the bus it runs against, one-instruction steps, faults and interrupt delivery.

use crate::mmu::Access;
use crate::state::{flags, seg, CpuState};
use iced_x86::{Decoder, DecoderOptions, Instruction, Register};

/// Physical memory, port I/O and timekeeping as the CPU sees them. RAM and MMIO are one
/// physical address space: the implementor routes each access (unclaimed reads are all-ones).
pub trait Bus {
    /// Reads physical memory.
    fn read(&mut self, address: u64, data: &mut [u8]);
    /// Writes physical memory.
    fn write(&mut self, address: u64, data: &[u8]);
    /// Port read.
    fn io_in(&mut self, port: u16, data: &mut [u8]);
    /// Port write.
    fn io_out(&mut self, port: u16, data: &[u8]);
    /// Current time-stamp counter.
    fn tsc(&mut self) -> u64;
    /// Reads an MSR the CPU core does not own (e.g. local APIC ones); `None` raises #GP.
    fn rdmsr(&mut self, _index: u32) -> Option<u64> {
        None
    }
    /// Writes an MSR the CPU core does not own; `false` raises #GP.
    fn wrmsr(&mut self, _index: u32, _value: u64) -> bool {
        false
    }
    /// Plain guest RAM the CPU may read and write directly instead of calling [`Bus::read`] and
    /// [`Bus::write`]: no MMIO, nothing with side effects beyond the bytes. The CPU reports
    /// its direct writes to its [`CodeTracker`](crate::CodeTracker) itself (and writes through
    /// [`Bus::write`] when it has none). The default is no direct RAM.
    fn ram(&self) -> &[RamRegion<'_>] {
        &[]
    }
    /// Atomically replaces the `size`-byte value at `address` with `new` if it still equals
    /// `current`; returns false (and writes nothing) otherwise. LOCK-prefixed instructions go
    /// through this so that they are atomic against other processors. The default is only
    /// correct for a single processor.
    fn compare_exchange(&mut self, address: u64, size: usize, current: u64, new: u64) -> bool {
        let mut b = [0u8; 8];
        self.read(address, &mut b[..size]);
        if u64::from_le_bytes(b) != current {
            return false;
        }
        self.write(address, &new.to_le_bytes()[..size]);
        true
    }
}

/// A run of guest RAM the CPU accesses directly (see [`Bus::ram`]).
#[derive(Debug, Clone, Copy)]
pub struct RamRegion<'a> {
    /// Guest-physical address of `bytes[0]`.
    pub start: u64,
    /// The RAM. Other processors and devices may access it concurrently, hence atomics.
    pub bytes: &'a [std::sync::atomic::AtomicU8],
    /// False for ROM: writes then go through [`Bus::write`].
    pub writable: bool,
}

/// Pseudo-vector used internally to restart an instruction whose locked update lost a race.
pub(crate) const RETRY: u8 = 0xff;

/// An exception raised while executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Vector (0..31).
    pub vector: u8,
    /// Error code, for exceptions that push one.
    pub error: Option<u32>,
    /// Page-fault linear address (for CR2).
    pub cr2: Option<u64>,
}

impl Fault {
    /// #GP(code).
    pub fn gp(code: u32) -> Self {
        Self {
            vector: 13,
            error: Some(code),
            cr2: None,
        }
    }
    /// #SS(code).
    pub fn ss(code: u32) -> Self {
        Self {
            vector: 12,
            error: Some(code),
            cr2: None,
        }
    }
    /// #NP(code).
    pub fn np(code: u32) -> Self {
        Self {
            vector: 11,
            error: Some(code),
            cr2: None,
        }
    }
    /// #TS(code).
    pub fn ts(code: u32) -> Self {
        Self {
            vector: 10,
            error: Some(code),
            cr2: None,
        }
    }
    /// #UD.
    pub fn ud() -> Self {
        Self {
            vector: 6,
            error: None,
            cr2: None,
        }
    }
    /// #DE.
    pub fn de() -> Self {
        Self {
            vector: 0,
            error: None,
            cr2: None,
        }
    }
    /// #NM.
    pub fn nm() -> Self {
        Self {
            vector: 7,
            error: None,
            cr2: None,
        }
    }
}

/// Result of an operation that may fault.
pub type R<T> = Result<T, Fault>;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// An instruction (or an exception delivery) completed.
    Executed,
    /// The CPU is halted (HLT, or waiting for SIPI) and needs an interrupt.
    Halted,
    /// A fault occurred while delivering a double fault: the processor shuts down.
    TripleFault,
}

/// How an event reaches the interrupt delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// Exception raised by an instruction (fault or trap).
    Exception,
    /// External interrupt or NMI.
    External,
    /// INT n / INT3 / INTO (privilege-checked against the gate DPL).
    Software,
}

/// The software CPU.
pub struct Cpu {
    /// Architectural registers.
    pub state: CpuState,
    /// Address of the instruction being executed.
    pub(crate) insn_start: u64,
    /// Shadow flag set by the current instruction (STI, MOV SS).
    pub(crate) new_shadow: bool,
    /// Opcodes already reported as unimplemented.
    unimplemented: std::collections::HashSet<iced_x86::Code>,
    /// Local APIC ID reported by CPUID.
    pub apic_id: u32,
    /// Number of processors reported by CPUID.
    pub cpu_count: u32,
    /// Decoded instructions by physical address.
    pub(crate) dcache: crate::cache::DecodeCache,
    /// Decoded blocks by physical address.
    pub(crate) blocks: crate::cache::BlockCache,
    /// Cached translations.
    pub(crate) tlb: crate::cache::Tlb,
    /// Partition-wide record of pages holding cached code (no caching without it).
    pub(crate) code: Option<std::sync::Arc<crate::cache::CodeTracker>>,
    /// The current instruction is a locked read-modify-write.
    pub(crate) locked: bool,
    /// Value the locked instruction read from its memory operand.
    pub(crate) lock_old: Option<u64>,
    /// Executable memory for native blocks (none: blocks are interpreted).
    pub(crate) native: Option<Box<dyn crate::native::NativeCode>>,
    /// Generation of the code in `native` (a clear starts a new one).
    pub(crate) native_gen: u64,
    /// Runs of a block before it gets native code.
    pub(crate) native_threshold: u32,
    /// Link slots of the native code of this generation: the link stamp each was linked in
    /// (`u64::MAX`: not linked) and the host address of its `JMP rel32`.
    pub(crate) native_links: Vec<[u64; 2]>,
    /// The slots linked since the link stamp last changed (pointed back when it does).
    pub(crate) native_linked: Vec<usize>,
    /// The data views native code ran under, numbered by position (for the jump cache).
    pub(crate) native_views: Vec<crate::mmu::DataView>,
    /// The last view numbered: the view, the code generation and its number.
    pub(crate) native_view: Option<(crate::mmu::DataView, u64, u64)>,
    /// Times the numbering of views started over (a view number holds within one).
    pub(crate) view_epoch: u64,
    /// The jump cache (see [`crate::native`]): RIP, link stamp (`u64::MAX`: empty), view
    /// number and host code address.
    pub(crate) native_jumps: Vec<[u64; 4]>,
    /// The link stamp: it changes whenever the code epoch or a translation may have, and link
    /// slots are followed only in the stamp they were filled in.
    pub(crate) link_stamp: u64,
    /// The code epoch and TLB changes `link_stamp` stands for.
    pub(crate) link_basis: (u64, u64),
    /// The `Bus::ram` regions the RAM entries were filled from: start, host address, length,
    /// writable.
    pub(crate) ram_print: Vec<(u64, usize, usize, bool)>,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu").field("rip", &self.state.rip).finish()
    }
}

impl Cpu {
    /// A processor in its power-on state.
    pub fn new(bsp: bool) -> Self {
        Self {
            state: CpuState::power_on(bsp),
            insn_start: 0,
            new_shadow: false,
            unimplemented: Default::default(),
            apic_id: 0,
            cpu_count: 1,
            dcache: crate::cache::DecodeCache::new(),
            blocks: crate::cache::BlockCache::new(),
            tlb: crate::cache::Tlb::new(),
            code: None,
            locked: false,
            lock_old: None,
            native: None,
            native_gen: 0,
            native_threshold: 0,
            native_links: Vec::new(),
            native_linked: Vec::new(),
            native_views: Vec::new(),
            native_view: None,
            view_epoch: 0,
            native_jumps: Vec::new(),
            link_stamp: 0,
            link_basis: (u64::MAX, u64::MAX),
            ram_print: Vec::new(),
        }
    }

    /// Lets the block engine translate blocks that ran `threshold` times to host code, run
    /// from `code` (see [`NativeCode`](crate::NativeCode)). Needs a code tracker.
    pub fn set_native_code(&mut self, code: Box<dyn crate::native::NativeCode>, threshold: u32) {
        self.native = Some(code);
        self.native_threshold = threshold;
        self.new_native_generation();
    }

    /// Starts a new generation of native code: links, views and jump cache entries of the
    /// code made so far are forgotten.
    pub(crate) fn new_native_generation(&mut self) {
        self.native_gen += 1;
        self.native_links.clear();
        self.native_linked.clear();
        self.native_views.clear();
        self.view_epoch += 1;
        self.native_jumps.clear();
        self.native_jumps
            .resize(crate::native::JUMP_ENTRIES, [0, u64::MAX, 0, 0]);
    }

    /// Forgets the RAM entries when the bus's direct RAM differs from the one they were
    /// filled from (native code uses their host addresses without looking at the regions).
    pub(crate) fn check_ram_regions(&mut self, bus: &dyn Bus) {
        let ram = bus.ram();
        let same = ram.len() == self.ram_print.len()
            && ram.iter().zip(&self.ram_print).all(|(r, p)| {
                *p == (
                    r.start,
                    r.bytes.as_ptr() as usize,
                    r.bytes.len(),
                    r.writable,
                )
            });
        if !same {
            self.ram_print.clear();
            self.ram_print.extend(ram.iter().map(|r| {
                (
                    r.start,
                    r.bytes.as_ptr() as usize,
                    r.bytes.len(),
                    r.writable,
                )
            }));
            self.tlb.flush_ram();
        }
    }

    /// Enables the decoded-instruction cache. Every write to guest RAM must be reported to
    /// `tracker` (by the bus) so that modified code is decoded again.
    pub fn set_code_tracker(&mut self, tracker: std::sync::Arc<crate::cache::CodeTracker>) {
        self.code = Some(tracker);
        // RAM entries point into the tracker's bitmap.
        self.tlb.flush_ram();
    }

    /// Drops cached translations and decoded code (after the state was replaced).
    pub fn flush_caches(&mut self) {
        self.tlb.flush();
        self.dcache.sync(u64::MAX);
        self.blocks.clear();
    }

    /// True when an external interrupt can be taken now.
    pub fn interrupts_enabled(&self) -> bool {
        self.state.rflags & flags::IF != 0
            && !self.state.interrupt_shadow
            && !self.state.wait_for_sipi
    }

    /// Delivers an external interrupt (caller checked [`Cpu::interrupts_enabled`]); wakes HLT.
    pub fn inject_interrupt(&mut self, vector: u8, bus: &mut dyn Bus) -> Step {
        self.state.halted = false;
        self.insn_start = self.state.rip;
        self.deliver_with_escalation(vector, None, EventKind::External, bus)
    }

    /// Delivers an NMI unless one is in progress; wakes HLT.
    pub fn inject_nmi(&mut self, bus: &mut dyn Bus) -> Step {
        if self.state.nmi_masked || self.state.wait_for_sipi {
            return Step::Executed;
        }
        self.state.halted = false;
        self.state.nmi_masked = true;
        self.insn_start = self.state.rip;
        self.deliver_with_escalation(2, None, EventKind::External, bus)
    }

    /// INIT: back to the reset state except for the APIC base; APs then wait for SIPI.
    pub fn init(&mut self) {
        let apic_base = self.state.apic_base;
        let bsp = apic_base & (1 << 8) != 0;
        self.state = CpuState::power_on(bsp);
        self.tlb.flush();
        self.state.apic_base = apic_base;
        self.state.wait_for_sipi = !bsp;
    }

    /// Startup IPI: start executing at `vector` × 4 KiB in real mode.
    pub fn sipi(&mut self, vector: u8) {
        if !self.state.wait_for_sipi {
            return;
        }
        self.state.wait_for_sipi = false;
        self.state.halted = false;
        let cs = &mut self.state.seg[seg::CS];
        cs.selector = u16::from(vector) << 8;
        cs.base = u64::from(vector) << 12;
        self.state.rip = 0;
    }

    /// Executes one instruction (or reports that the CPU sleeps).
    pub fn step(&mut self, bus: &mut dyn Bus) -> Step {
        if self.state.wait_for_sipi || self.state.halted {
            return Step::Halted;
        }
        self.insn_start = self.state.rip;
        self.new_shadow = false;
        let shadow_before = self.state.interrupt_shadow;
        let mut insn = Instruction::default();
        let result = self
            .fetch_decode(bus, &mut insn)
            .and_then(|()| self.execute(&insn, bus));
        // The shadow lasts exactly one instruction.
        if shadow_before || self.new_shadow {
            self.state.interrupt_shadow = self.new_shadow && !shadow_before;
        }
        match result {
            Err(f) if f.vector == RETRY => {
                // Another processor changed the locked operand: run the instruction again.
                self.state.rip = self.insn_start;
                Step::Executed
            }
            Ok(()) => {
                if self.state.halted {
                    Step::Halted
                } else {
                    Step::Executed
                }
            }
            Err(f) => {
                if f.vector == 6 {
                    tracing::debug!(
                        rip = format_args!("{:#x}", self.insn_start),
                        code = ?insn.code(),
                        len = insn.len(),
                        "#UD"
                    );
                }
                self.state.rip = self.insn_start;
                self.raise(f, bus)
            }
        }
    }

    /// Executes the one instruction at CS:RIP on behalf of a hypervisor that stopped on it (an
    /// MMIO access or a string port I/O instruction) and returns a fault instead of delivering
    /// it through the IDT, so that the caller can inject it into the real processor.
    ///
    /// `prefetched` holds the instruction bytes the hypervisor reported (may be empty); they
    /// are decoded when they contain the whole instruction, otherwise the instruction is
    /// fetched through the page tables. On a fault RIP points at the instruction again and
    /// registers describe the work left (a REP string instruction stops at the faulting
    /// element). A REP instruction may also return `Ok` with RIP unchanged after a bounded
    /// number of iterations; running the guest then continues it.
    pub fn emulate_one(&mut self, bus: &mut dyn Bus, prefetched: &[u8]) -> Result<(), Fault> {
        self.insn_start = self.state.rip;
        self.new_shadow = false;
        let mut insn = Instruction::default();
        let mut decoded = false;
        if !prefetched.is_empty() {
            let bytes = &prefetched[..prefetched.len().min(15)];
            let mut d = Decoder::with_ip(
                self.state.bitness(),
                bytes,
                self.state.rip,
                DecoderOptions::NO_INVALID_CHECK,
            );
            d.decode_out(&mut insn);
            // Too few bytes: fall back to fetching; anything else invalid is #UD below.
            decoded = !(insn.is_invalid() && d.last_error() == iced_x86::DecoderError::NoMoreBytes);
        }
        let result = if decoded {
            if insn.is_invalid() {
                Err(Fault::ud())
            } else {
                Ok(())
            }
        } else {
            self.fetch_decode(bus, &mut insn)
        }
        .and_then(|()| self.execute(&insn, bus));
        match result {
            Ok(()) => Ok(()),
            Err(f) => {
                self.state.rip = self.insn_start;
                if f.vector == RETRY {
                    // A locked update lost a race: the guest runs the instruction again.
                    Ok(())
                } else {
                    Err(f)
                }
            }
        }
    }

    /// Delivers an exception raised by the current instruction, escalating to #DF and triple
    /// fault as the processor does.
    pub(crate) fn raise(&mut self, f: Fault, bus: &mut dyn Bus) -> Step {
        if let Some(a) = f.cr2 {
            self.state.cr2 = a;
        }
        self.deliver_with_escalation(f.vector, f.error, EventKind::Exception, bus)
    }

    fn deliver_with_escalation(
        &mut self,
        vector: u8,
        error: Option<u32>,
        kind: EventKind,
        bus: &mut dyn Bus,
    ) -> Step {
        if kind == EventKind::Exception {
            tracing::trace!(
                vector,
                error = ?error,
                rip = format_args!("{:#x}", self.state.rip),
                rsp = format_args!("{:#x}", self.state.gpr[4]),
                cr2 = format_args!("{:#x}", self.state.cr2),
                "exception"
            );
        }
        let saved = (
            self.state.rip,
            self.state.rflags,
            self.state.seg,
            self.state.gpr[4],
        );
        match self.deliver(vector, error, kind, bus) {
            Ok(()) => Step::Executed,
            Err(f2) => {
                tracing::debug!(
                    vector,
                    error = ?error,
                    then = f2.vector,
                    then_error = ?f2.error,
                    rip = format_args!("{:#x}", self.insn_start),
                    cr2 = format_args!("{:#x}", self.state.cr2),
                    "fault while delivering an event"
                );
                if let Some(a) = f2.cr2 {
                    self.state.cr2 = a;
                }
                (
                    self.state.rip,
                    self.state.rflags,
                    self.state.seg,
                    self.state.gpr[4],
                ) = saved;
                if vector == 8 {
                    return Step::TripleFault;
                }
                let benign = |v: u8| !matches!(v, 0 | 10 | 11 | 12 | 13 | 14);
                let (v, e) = if benign(vector) || benign(f2.vector) || kind != EventKind::Exception
                {
                    (f2.vector, f2.error)
                } else {
                    (8, Some(0))
                };
                match self.deliver(v, e, EventKind::Exception, bus) {
                    Ok(()) => Step::Executed,
                    Err(_) if v == 8 => Step::TripleFault,
                    Err(_) => {
                        (
                            self.state.rip,
                            self.state.rflags,
                            self.state.seg,
                            self.state.gpr[4],
                        ) = saved;
                        match self.deliver(8, Some(0), EventKind::Exception, bus) {
                            Ok(()) => Step::Executed,
                            Err(_) => Step::TripleFault,
                        }
                    }
                }
            }
        }
    }

    fn fetch_decode(&mut self, bus: &mut dyn Bus, out: &mut Instruction) -> R<()> {
        let bits = self.state.bitness();
        let ip = self.state.rip;
        let lin = self.linear(seg::CS, ip, 1, Access::Fetch)?;
        let mut bytes = [0u8; 15];
        let first = ((0x1000 - (lin & 0xfff)) as usize).min(15);
        let user = self.state.cpl() == 3;
        let p = self.translate(lin, Access::Fetch, user, bus)?;
        let cacheable = match &self.code {
            Some(t) => {
                self.dcache.sync(t.epoch());
                if let Some(insn) = self.dcache.get(p, bits) {
                    if insn.ip() == ip {
                        *out = *insn;
                        return Ok(());
                    }
                }
                // Mark before reading so a concurrent write invalidates what we decode.
                t.mark(p)
            }
            None => false,
        };
        bus.read(p, &mut bytes[..first]);
        let mut avail = first;
        let mut second_fault = None;
        if first < 15 {
            match self.translate(lin + first as u64, Access::Fetch, user, bus) {
                Ok(p2) => {
                    bus.read(p2, &mut bytes[first..]);
                    avail = 15;
                }
                Err(f) => second_fault = Some(f),
            }
        }
        let mut d = Decoder::with_ip(bits, &bytes[..avail], ip, DecoderOptions::NO_INVALID_CHECK);
        d.decode_out(out);
        let insn = &*out;
        if insn.is_invalid() {
            tracing::debug!(ip = format_args!("{ip:#x}"), bytes = ?&bytes[..avail.min(8)], "undecodable instruction");
            if d.last_error() == iced_x86::DecoderError::NoMoreBytes {
                if let Some(f) = second_fault {
                    return Err(f);
                }
            }
            return Err(Fault::ud());
        }
        if cacheable && (p & 0xfff) as usize + insn.len() <= 0x1000 {
            self.dcache.insert(p, bits, insn);
        }
        Ok(())
    }

    /// Logs an opcode the core does not implement (once) and raises #UD.
    pub(crate) fn unimplemented(&mut self, insn: &Instruction) -> Fault {
        if self.unimplemented.insert(insn.code()) {
            tracing::warn!(
                "software CPU: unimplemented instruction {:?} at {:#x}; raising #UD",
                insn.code(),
                self.insn_start
            );
        }
        Fault::ud()
    }

    // ---- registers ----

    /// Reads a register operand (any width, including AH..BH and segment registers).
    pub(crate) fn reg(&self, r: Register) -> u64 {
        if r.is_segment_register() {
            return u64::from(self.state.seg[seg_index(r)].selector);
        }
        let full = r.full_register();
        if !full.is_gpr64() {
            return 0;
        }
        let v = self.state.gpr[full as usize - Register::RAX as usize];
        match r.size() {
            1 if is_high8(r) => (v >> 8) & 0xff,
            1 => v & 0xff,
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            _ => v,
        }
    }

    /// Writes a general register with x86 width rules (32-bit writes zero-extend).
    pub(crate) fn set_reg(&mut self, r: Register, value: u64) {
        let full = r.full_register();
        if !full.is_gpr64() {
            return;
        }
        let slot = &mut self.state.gpr[full as usize - Register::RAX as usize];
        *slot = match r.size() {
            1 if is_high8(r) => (*slot & !0xff00) | ((value & 0xff) << 8),
            1 => (*slot & !0xff) | (value & 0xff),
            2 => (*slot & !0xffff) | (value & 0xffff),
            4 => value & 0xffff_ffff,
            _ => value,
        };
    }

    /// Sets the status flags selected by `mask` from `new`.
    pub(crate) fn set_flags(&mut self, mask: u64, new: u64) {
        self.state.rflags = (self.state.rflags & !mask) | (new & mask);
    }
}

/// Index (ES=0 .. GS=5) of a segment register.
pub(crate) fn seg_index(r: Register) -> usize {
    match r {
        Register::ES => seg::ES,
        Register::CS => seg::CS,
        Register::SS => seg::SS,
        Register::FS => seg::FS,
        Register::GS => seg::GS,
        _ => seg::DS,
    }
}

fn is_high8(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}
