//! Decoded-instruction cache and TLB.
//!
//! Decoded instructions are cached per CPU by physical address and code size. Which physical
//! pages hold cached code is tracked partition-wide in a [`CodeTracker`]: every write to guest
//! RAM (from any processor or device) that touches such a page bumps an epoch, and each CPU
//! drops its cache when it sees a new epoch before its next instruction. The TLB caches
//! linear→physical translations and is flushed as the architecture says (CR3, CR0/CR4 paging
//! bits, INVLPG, EFER).

use iced_x86::Instruction;
use std::sync::atomic::{AtomicU64, Ordering};

/// The code bitmap word of pages the tracker does not cover (always 0).
static NO_CODE: AtomicU64 = AtomicU64::new(0);

/// The address of a code bitmap word that stays 0 (for pages no tracker covers).
pub(crate) fn no_code_word() -> usize {
    &NO_CODE as *const AtomicU64 as usize
}

/// Pages holding cached code, shared by all processors of a partition.
#[derive(Debug)]
pub struct CodeTracker {
    bits: Vec<AtomicU64>,
    epoch: AtomicU64,
}

impl CodeTracker {
    /// Tracks physical addresses below `limit` (code elsewhere is never cached).
    pub fn new(limit: u64) -> Self {
        let pages = limit.div_ceil(4096);
        let words = pages.div_ceil(64) as usize;
        Self {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
        }
    }

    fn slot(&self, page: u64) -> Option<(&AtomicU64, u64)> {
        let w = self.bits.get((page / 64) as usize)?;
        Some((w, 1u64 << (page % 64)))
    }

    /// Address of the bitmap word holding the bit of the page at `phys` (bit `page % 64`),
    /// for native code; pages not tracked get a word that stays 0. Valid while the tracker
    /// lives.
    pub(crate) fn word_address(&self, phys: u64) -> usize {
        let w = self.bits.get((phys >> 18) as usize).unwrap_or(&NO_CODE);
        w as *const AtomicU64 as usize
    }

    /// Marks a page as holding cached code; false when the page is not tracked.
    pub fn mark(&self, phys: u64) -> bool {
        match self.slot(phys >> 12) {
            Some((w, bit)) => {
                w.fetch_or(bit, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Records a write of `len` bytes at `phys`: invalidates cached code on those pages.
    #[inline]
    pub fn note_write(&self, phys: u64, len: usize) {
        let first = phys >> 12;
        let last = (phys + len.max(1) as u64 - 1) >> 12;
        for page in first..=last {
            if let Some((w, bit)) = self.slot(page) {
                if w.load(Ordering::Relaxed) & bit != 0
                    && w.fetch_and(!bit, Ordering::SeqCst) & bit != 0
                {
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Current invalidation epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

const DECODE_ENTRIES: usize = 8192;

/// Per-CPU decoded instructions, direct-mapped by physical address.
pub(crate) struct DecodeCache {
    tags: Vec<u64>,
    insns: Vec<Instruction>,
    epoch: u64,
}

impl DecodeCache {
    pub(crate) fn new() -> Self {
        Self {
            tags: vec![u64::MAX; DECODE_ENTRIES],
            insns: vec![Instruction::default(); DECODE_ENTRIES],
            epoch: 0,
        }
    }

    fn index(phys: u64) -> usize {
        ((phys ^ (phys >> 13)) as usize) & (DECODE_ENTRIES - 1)
    }

    fn tag(phys: u64, bits: u32) -> u64 {
        (phys << 2) | u64::from(bits / 32)
    }

    /// Drops everything if another write invalidated code since the last look.
    pub(crate) fn sync(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.tags.fill(u64::MAX);
            self.epoch = epoch;
        }
    }

    pub(crate) fn get(&self, phys: u64, bits: u32) -> Option<&Instruction> {
        let i = Self::index(phys);
        (self.tags[i] == Self::tag(phys, bits)).then(|| &self.insns[i])
    }

    pub(crate) fn insert(&mut self, phys: u64, bits: u32, insn: &Instruction) {
        let i = Self::index(phys);
        self.tags[i] = Self::tag(phys, bits);
        self.insns[i] = *insn;
    }
}

const TLB_ENTRIES: usize = 4096;

/// One cached translation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlbEntry {
    /// Linear page number + 1 (0 = invalid).
    pub(crate) key: u64,
    /// Flush generation the entry belongs to.
    pub(crate) gen: u64,
    /// Physical page base.
    pub(crate) phys: u64,
    /// Supervisor writes allowed without a walk (permission and dirty bit already set).
    pub(crate) write: bool,
    /// User writes allowed by every level.
    pub(crate) user_write: bool,
    /// User access allowed.
    pub(crate) user: bool,
    /// Instruction fetch allowed.
    pub(crate) exec: bool,
}

pub(crate) const RAM_ENTRIES: usize = 2048;

/// Where a linear page lies in directly accessible RAM ([`Bus::ram`](crate::Bus::ram)), for
/// data accesses whose segment needs no checks (see `DataView` in the block engine). Filled
/// after a translation succeeded, cleared whenever the TLB is.
///
/// Native code reads `read`, `write`, `host`, `phys` and `code` at fixed offsets (`repr(C)`,
/// 64 bytes).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct RamEntry {
    /// The [`ram_key`] reads are allowed for (0: none).
    pub(crate) read: u64,
    /// The [`ram_key`] writes are allowed for (0: none).
    pub(crate) write: u64,
    /// Host address of the page's first byte (valid while the regions of `Bus::ram` are the
    /// ones the entry was filled from; see `Cpu::check_ram_regions`).
    pub(crate) host: usize,
    /// Guest-physical address of the page.
    pub(crate) phys: u64,
    /// Index of the region in `Bus::ram`, and its guest-physical start (checked on use, so a
    /// changed region list never reaches the wrong memory).
    pub(crate) region: usize,
    pub(crate) start: u64,
    /// Offset of the page in the region's bytes.
    pub(crate) offset: usize,
    /// Address of the code tracker's bitmap word for the page (see
    /// [`CodeTracker::word_address`]).
    pub(crate) code: usize,
}

const RAM_EMPTY: RamEntry = RamEntry {
    read: 0,
    write: 0,
    host: 0,
    phys: 0,
    region: 0,
    start: 0,
    offset: 0,
    code: 0,
};

/// Where a page lies in direct RAM (see [`Tlb::ram_insert`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RamPlace {
    pub(crate) region: usize,
    pub(crate) start: u64,
    pub(crate) offset: usize,
    pub(crate) host: usize,
    /// See [`RamEntry::code`].
    pub(crate) code: usize,
}

/// The key of a RAM entry: the linear page, whether paging is on and whether the access is a
/// user one (the permissions the translation checked), and a valid bit.
#[inline(always)]
pub(crate) fn ram_key(lin: u64, paging: bool, user: bool) -> u64 {
    (lin >> 12 << 3) | (u64::from(paging) << 2) | (u64::from(user) << 1) | 1
}

/// Direct-mapped TLB. A full flush starts a new generation instead of touching every entry.
pub(crate) struct Tlb {
    entries: Vec<TlbEntry>,
    gen: u64,
    /// Some entry of this generation came from a large page (INVLPG then flushes everything,
    /// since entries are kept per 4 KiB).
    large: bool,
    /// Linear pages → RAM for the block engine's data accesses; flushed with the TLB.
    ram: Box<[RamEntry; RAM_ENTRIES]>,
    /// Flushes so far, of single pages too (linked native code relies on translations).
    changes: u64,
}

impl Tlb {
    pub(crate) fn new() -> Self {
        Self {
            entries: vec![
                TlbEntry {
                    key: 0,
                    gen: 0,
                    phys: 0,
                    write: false,
                    user_write: false,
                    user: false,
                    exec: false
                };
                TLB_ENTRIES
            ],
            gen: 1,
            large: false,
            ram: Box::new([RAM_EMPTY; RAM_ENTRIES]),
            changes: 0,
        }
    }

    /// Flushes so far: translations are unchanged while this is.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// The RAM entry slot of `lin`'s page.
    #[inline(always)]
    pub(crate) fn ram_entry(&self, lin: u64) -> &RamEntry {
        &self.ram[((lin >> 12) as usize) & (RAM_ENTRIES - 1)]
    }

    /// Records that `key`'s page lies at `offset` in RAM region `region` (starting at
    /// `start`, with the page at host address `host`) and may be read, and written when
    /// `write`. A write fill keeps nothing else; a read fill keeps the write permission of
    /// the same page and place.
    pub(crate) fn ram_insert(&mut self, key: u64, place: RamPlace, write: bool) {
        let e = &mut self.ram[((key >> 3) as usize) & (RAM_ENTRIES - 1)];
        let writable = write
            || (e.write == key
                && e.region == place.region
                && e.start == place.start
                && e.offset == place.offset);
        *e = RamEntry {
            read: key,
            write: if writable { key } else { 0 },
            host: place.host,
            phys: place.start + place.offset as u64,
            region: place.region,
            start: place.start,
            offset: place.offset,
            code: place.code,
        };
    }

    /// Forgets every RAM entry (the RAM regions changed).
    pub(crate) fn flush_ram(&mut self) {
        self.ram.fill(RAM_EMPTY);
    }

    /// Address of the RAM entry table, for native code.
    pub(crate) fn ram_table(&self) -> usize {
        self.ram.as_ptr() as usize
    }

    #[inline]
    pub(crate) fn lookup(&self, lin: u64) -> Option<&TlbEntry> {
        let page = lin >> 12;
        let e = &self.entries[(page as usize) & (TLB_ENTRIES - 1)];
        (e.key == page + 1 && e.gen == self.gen).then_some(e)
    }

    pub(crate) fn insert(&mut self, lin: u64, e: TlbEntry, large: bool) {
        self.large |= large;
        let page = lin >> 12;
        self.entries[(page as usize) & (TLB_ENTRIES - 1)] = TlbEntry {
            key: page + 1,
            gen: self.gen,
            ..e
        };
    }

    pub(crate) fn flush(&mut self) {
        self.gen += 1;
        self.changes += 1;
        self.large = false;
        self.ram.fill(RAM_EMPTY);
    }

    pub(crate) fn flush_page(&mut self, lin: u64) {
        self.changes += 1;
        if self.large {
            self.flush();
            return;
        }
        let page = lin >> 12;
        let e = &mut self.entries[(page as usize) & (TLB_ENTRIES - 1)];
        if e.key == page + 1 {
            e.key = 0;
        }
        self.ram[(page as usize) & (RAM_ENTRIES - 1)] = RAM_EMPTY;
    }
}

/// Largest number of instructions in one block.
pub(crate) const BLOCK_MAX: usize = 64;
const BLOCK_ENTRIES: usize = 65536;

/// How execution goes on after an instruction of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Next instruction of the block: the instruction neither branches nor writes memory.
    Straight,
    /// Next instruction of the block when RIP fell through to it.
    Next,
    /// As `Next`, for an instruction that may write memory: the block also stops when the
    /// code epoch moved.
    NextAfterStore,
    /// Last instruction of the block (an unconditional near branch); the processor state that
    /// blocks depend on (mode, paging, interrupt flag) is unchanged.
    End,
    /// Last instruction, which may change anything: the caller re-examines the processor
    /// (interrupt shadow, halt, mode) before going on.
    Exit,
}

/// One instruction of a block.
#[derive(Clone, Copy)]
pub(crate) struct Decoded {
    pub(crate) insn: Instruction,
    /// Address of the following instruction (masked to the code size).
    pub(crate) next: u64,
    pub(crate) flow: Flow,
    pub(crate) fast: crate::block::Fast,
}

/// A run of instructions decoded from one physical page.
#[derive(Default)]
pub(crate) struct Block {
    /// Physical address, code size and epoch the block was decoded for (`tag` 0 = empty).
    pub(crate) tag: u64,
    pub(crate) epoch: u64,
    /// RIP of the first instruction.
    pub(crate) ip: u64,
    /// Bytes from the first instruction to the end of the last.
    pub(crate) bytes: u64,
    /// Those bytes as decoded (a new epoch keeps the block when they are unchanged).
    pub(crate) raw: Vec<u8>,
    pub(crate) insns: Vec<Decoded>,
    /// Times the block ran since it was decoded (counts up to the native threshold).
    pub(crate) runs: u32,
    /// Host code for the block, if made.
    pub(crate) native: Option<NativeBlock>,
}

/// Installed host code for a block (see [`crate::native`]).
#[derive(Clone, Copy)]
pub(crate) struct NativeBlock {
    /// The code memory generation it was installed in.
    pub(crate) gen: u64,
    pub(crate) handle: usize,
    /// Instructions (a bit each) the code can start at (see [`crate::native::Compiled`]).
    pub(crate) entries: u64,
    /// Offset of the dispatch entry.
    pub(crate) dispatch: usize,
    /// The data view the code was made for, as far as it depends on it (`DataView::only`
    /// with `segs`).
    pub(crate) view: crate::mmu::DataView,
    /// The segments its memory accesses go through.
    pub(crate) segs: u8,
}

/// Per-CPU decoded blocks, direct-mapped by physical address. Entries decoded before the
/// code tracker's current epoch are stale.
pub(crate) struct BlockCache {
    pub(crate) blocks: Vec<Block>,
}

impl BlockCache {
    pub(crate) fn new() -> Self {
        Self {
            blocks: (0..BLOCK_ENTRIES).map(|_| Block::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn index(phys: u64) -> usize {
        ((phys ^ (phys >> 12)) as usize) & (BLOCK_ENTRIES - 1)
    }

    #[inline]
    pub(crate) fn tag(phys: u64, bits: u32) -> u64 {
        ((phys << 2) | u64::from(bits / 32)) + 1
    }

    /// Forgets every block.
    pub(crate) fn clear(&mut self) {
        for b in &mut self.blocks {
            b.tag = 0;
        }
    }
}
