//! Decoded-instruction cache and TLB.
//!
//! Decoded instructions are cached per CPU by physical address and code size. Which physical
//! pages hold cached code is tracked partition-wide in a [`CodeTracker`]: every write to guest
//! RAM (from any processor or device) that touches such a page bumps an epoch, and each CPU
//! drops its cache when it sees a new epoch before its next instruction. The TLB caches
//! linear→physical translations and is flushed as the architecture says (CR3, CR0/CR4 paging
//! bits, INVLPG, EFER).

use iced_x86::Instruction;
use std::collections::HashSet;
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
    /// A global translation (kept when CR3 is loaded).
    pub(crate) global: bool,
    /// The [`Tlb`]'s fetch epoch in which code was fetched through the entry (see
    /// [`Tlb::note_fetch`]).
    pub(crate) fetched: u64,
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
    (lin & !0xfff) | (u64::from(paging) << 2) | (u64::from(user) << 1) | 1
}

/// Sizes of large pages (offset masks): 2 MiB, 4 MiB, 1 GiB.
const LARGE_MASKS: [u64; 3] = [0x1f_ffff, 0x3f_ffff, 0x3fff_ffff];

/// Most large-page regions remembered between full flushes; beyond, INVLPG flushes all.
const LARGE_REGIONS: usize = 4096;

/// Direct-mapped TLB. A flush starts a new generation instead of touching every entry: global
/// entries belong to a generation of their own, which only a full flush ends.
pub(crate) struct Tlb {
    entries: Vec<TlbEntry>,
    gen: u64,
    /// Generation of global entries (counted apart from `gen`, from the top bit).
    global_gen: u64,
    /// Large pages this generation's entries came from, as base | index in [`LARGE_MASKS`]
    /// (entries are kept per 4 KiB, so INVLPG in such a page drops the whole page's).
    large: HashSet<u64>,
    /// Linear pages → RAM for the block engine's data accesses; flushed with the TLB.
    ram: Box<[RamEntry; RAM_ENTRIES]>,
    /// Whether each RAM entry came from a global translation.
    ram_global: Box<[bool; RAM_ENTRIES]>,
    /// Times a translation code was fetched through may have changed (linked native code
    /// relies on those).
    changes: u64,
    /// Linear pages code was fetched from since `changes` last moved, and whether one of
    /// them was not global.
    fetched: HashSet<u64>,
    fetched_local: bool,
    /// Counts `changes`, offset so that 0 never matches ([`TlbEntry::fetched`]).
    fetch_epoch: u64,
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
                    exec: false,
                    global: false,
                    fetched: 0,
                };
                TLB_ENTRIES
            ],
            gen: 1,
            global_gen: 1 << 63,
            large: HashSet::new(),
            ram: Box::new([RAM_EMPTY; RAM_ENTRIES]),
            ram_global: Box::new([false; RAM_ENTRIES]),
            changes: 0,
            fetched: HashSet::new(),
            fetched_local: false,
            fetch_epoch: 1,
        }
    }

    /// Changes of the translations code was fetched through: those are unchanged while
    /// this is.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// Records that code is fetched through the current entry of `lin` (made or checked by
    /// the caller just now).
    #[inline]
    pub(crate) fn note_fetch(&mut self, lin: u64) {
        let page = lin >> 12;
        let epoch = self.fetch_epoch;
        let e = &mut self.entries[(page as usize) & (TLB_ENTRIES - 1)];
        if e.key != page + 1 || e.fetched == epoch {
            return;
        }
        e.fetched = epoch;
        self.fetched_local |= !e.global;
        self.fetched.insert(page);
    }

    /// A translation code was fetched through may have changed.
    fn changed(&mut self) {
        self.changes += 1;
        self.fetch_epoch += 1;
        self.fetched.clear();
        self.fetched_local = false;
    }

    /// The RAM entry slot of `lin`'s page.
    #[inline(always)]
    pub(crate) fn ram_entry(&self, lin: u64) -> &RamEntry {
        &self.ram[((lin >> 12) as usize) & (RAM_ENTRIES - 1)]
    }

    /// Records that `key`'s page lies at `offset` in RAM region `region` (starting at
    /// `start`, with the page at host address `host`) and may be read, and written when
    /// `write`. A write fill keeps nothing else; a read fill keeps the write permission of
    /// the same page and place. `global`: the page's translation is global.
    pub(crate) fn ram_insert(&mut self, key: u64, place: RamPlace, write: bool, global: bool) {
        let i = ((key >> 12) as usize) & (RAM_ENTRIES - 1);
        let e = &mut self.ram[i];
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
        self.ram_global[i] = global;
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
        (e.key == page + 1 && (e.gen == self.gen || e.gen == self.global_gen)).then_some(e)
    }

    /// Caches the translation of `lin`; `large`: the offset mask of the large page it came
    /// from (0xfff for a 4 KiB page).
    pub(crate) fn insert(&mut self, lin: u64, e: TlbEntry, large: u64) {
        if let Some(k) = LARGE_MASKS.iter().position(|&m| m == large) {
            if self.large.len() >= LARGE_REGIONS {
                self.flush();
            }
            self.large.insert((lin & !large) | k as u64);
        }
        let page = lin >> 12;
        self.entries[(page as usize) & (TLB_ENTRIES - 1)] = TlbEntry {
            key: page + 1,
            gen: if e.global { self.global_gen } else { self.gen },
            fetched: 0,
            ..e
        };
    }

    /// Drops every translation, global ones too.
    pub(crate) fn flush(&mut self) {
        self.gen += 1;
        self.global_gen += 1;
        self.large.clear();
        self.ram.fill(RAM_EMPTY);
        self.changed();
    }

    /// Drops the translations that are not global (a CR3 load with CR4.PGE set).
    pub(crate) fn flush_local(&mut self) {
        self.gen += 1;
        for (e, global) in self.ram.iter_mut().zip(self.ram_global.iter()) {
            if !global {
                *e = RAM_EMPTY;
            }
        }
        if self.fetched_local {
            self.changed();
        }
    }

    /// Drops the translations of `lin`'s page (INVLPG): of the whole large page when it lies
    /// in one.
    pub(crate) fn flush_page(&mut self, lin: u64) {
        let region = LARGE_MASKS
            .iter()
            .enumerate()
            .find(|&(k, &m)| self.large.contains(&((lin & !m) | k as u64)));
        let (first, pages) = match region {
            None => (lin >> 12, 1),
            Some((k, &m)) if m < 0x3fff_ffff => {
                self.large.remove(&((lin & !m) | k as u64));
                ((lin & !m) >> 12, (m + 1) >> 12)
            }
            Some(_) => {
                self.flush();
                return;
            }
        };
        let mut code = false;
        for page in first..first + pages {
            let e = &mut self.entries[(page as usize) & (TLB_ENTRIES - 1)];
            if e.key == page + 1 {
                e.key = 0;
            }
            self.ram[(page as usize) & (RAM_ENTRIES - 1)] = RAM_EMPTY;
            code |= self.fetched.contains(&page);
        }
        if code {
            self.changed();
        }
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
    /// The view (numbering epoch and number, plus one) the code was last found good for.
    pub(crate) checked: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(phys: u64, global: bool) -> TlbEntry {
        TlbEntry {
            key: 0,
            gen: 0,
            phys,
            write: true,
            user_write: true,
            user: true,
            exec: true,
            global,
            fetched: 0,
        }
    }

    #[test]
    fn invlpg_in_a_large_page_drops_all_its_small_entries() {
        let mut t = Tlb::new();
        let base = 0xffff_8880_0020_0000u64;
        for page in [0u64, 1, 0x1ff] {
            let lin = base + page * 0x1000;
            t.insert(lin, entry(0x20_0000 + page * 0x1000, false), 0x1f_ffff);
        }
        t.insert(0x7000, entry(0x7000, false), 0xfff);
        t.flush_page(base + 0x5000);
        for page in [0u64, 1, 0x1ff] {
            assert!(t.lookup(base + page * 0x1000).is_none());
        }
        assert!(t.lookup(0x7000).is_some(), "a 4 KiB page elsewhere stays");
        // A 4 KiB page: only that one.
        t.insert(0x8000, entry(0x8000, false), 0xfff);
        t.flush_page(0x8000);
        assert!(t.lookup(0x8000).is_none());
        assert!(t.lookup(0x7000).is_some());
    }

    /// A TLB with a global page at 0x1000 and a local one at 0x2000.
    fn global_and_local() -> Tlb {
        let mut t = Tlb::new();
        t.insert(0x1000, entry(0x1000, true), 0xfff);
        t.insert(0x2000, entry(0x2000, false), 0xfff);
        t
    }

    #[test]
    fn a_cr3_load_keeps_global_entries_and_a_full_flush_does_not() {
        let mut t = global_and_local();
        t.flush_local();
        assert!(t.lookup(0x1000).is_some());
        assert!(t.lookup(0x2000).is_none());
        t.flush();
        assert!(t.lookup(0x1000).is_none());
    }

    #[test]
    fn translations_code_came_through_count_as_changes() {
        let mut t = global_and_local();
        t.note_fetch(0x1000);
        let c = t.changes();
        // Data pages and CR3 loads that keep the global code page: no change.
        t.flush_page(0x2000);
        t.flush_local();
        assert_eq!(t.changes(), c);
        // The code page itself.
        t.flush_page(0x1000);
        assert_ne!(t.changes(), c);
        // Code fetched through a local translation: a CR3 load changes it.
        t.insert(0x3000, entry(0x3000, false), 0xfff);
        t.note_fetch(0x3000);
        let c = t.changes();
        t.flush_local();
        assert_ne!(t.changes(), c);
        // Fetched again in the new epoch (the entry was made anew): noted again.
        t.insert(0x3000, entry(0x3000, false), 0xfff);
        t.note_fetch(0x3000);
        let c = t.changes();
        t.flush_page(0x3000);
        assert_ne!(t.changes(), c);
    }

    #[test]
    fn a_code_page_evicted_from_the_tlb_still_counts() {
        let mut t = Tlb::new();
        t.insert(0x1000, entry(0x1000, false), 0xfff);
        t.note_fetch(0x1000);
        // Same slot: the code page's entry is replaced by a data page's.
        let other = 0x1000 + (TLB_ENTRIES as u64) * 0x1000;
        t.insert(other, entry(0x9000, false), 0xfff);
        let c = t.changes();
        t.flush_page(0x1000);
        assert_ne!(t.changes(), c);
    }
}
