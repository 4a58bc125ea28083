//! Linear and physical address translation: segmentation checks and the page walk
//! (2-level, PAE, 4-level) with accessed/dirty updates and page-fault error codes.

use crate::cpu::{Bus, Cpu, Fault, RamRegion, R};
use crate::state::{cr, efer, flags, seg};
use std::sync::atomic::{AtomicU8, Ordering};

/// What an access is for (selects the permission checks and the #PF error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

fn read_u64(bus: &mut dyn Bus, addr: u64) -> u64 {
    if let Some(m) = ram_slice(bus.ram(), addr, 8, false) {
        return load(m);
    }
    let mut b = [0u8; 8];
    bus.read(addr, &mut b);
    u64::from_le_bytes(b)
}

fn read_u32(bus: &mut dyn Bus, addr: u64) -> u64 {
    if let Some(m) = ram_slice(bus.ram(), addr, 4, false) {
        return load(m);
    }
    let mut b = [0u8; 4];
    bus.read(addr, &mut b);
    u64::from(u32::from_le_bytes(b))
}

/// The directly accessible RAM holding the `len` bytes at `phys` (writable RAM for `write`).
#[inline(always)]
pub(crate) fn ram_slice<'b>(
    regions: &'b [RamRegion<'b>],
    phys: u64,
    len: usize,
    write: bool,
) -> Option<&'b [AtomicU8]> {
    for r in regions {
        let off = phys.wrapping_sub(r.start);
        if off < r.bytes.len() as u64 {
            if write && !r.writable {
                return None;
            }
            let off = off as usize;
            return r.bytes.get(off..off.checked_add(len)?);
        }
    }
    None
}

/// Little-endian value of up to 8 bytes of RAM.
#[inline(always)]
pub(crate) fn load(m: &[AtomicU8]) -> u64 {
    match m.len() {
        1 => u64::from(m[0].load(Ordering::Relaxed)),
        2 => load_n::<2>(m),
        4 => load_n::<4>(m),
        8 => load_n::<8>(m),
        _ => {
            let mut v = 0u64;
            for (k, b) in m.iter().enumerate().take(8) {
                v |= u64::from(b.load(Ordering::Relaxed)) << (8 * k);
            }
            v
        }
    }
}

/// `load` for a length known at compile time (the loop unrolled).
#[inline(always)]
fn load_n<const N: usize>(m: &[AtomicU8]) -> u64 {
    let mut v = 0u64;
    for (k, b) in m[..N].iter().enumerate() {
        v |= u64::from(b.load(Ordering::Relaxed)) << (8 * k);
    }
    v
}

/// Stores the low `m.len()` bytes (up to 8) of `v`, little-endian.
#[inline(always)]
pub(crate) fn store(m: &[AtomicU8], v: u64) {
    match m.len() {
        1 => m[0].store(v as u8, Ordering::Relaxed),
        2 => store_n::<2>(m, v),
        4 => store_n::<4>(m, v),
        8 => store_n::<8>(m, v),
        _ => {
            for (k, b) in m.iter().enumerate().take(8) {
                b.store((v >> (8 * k)) as u8, Ordering::Relaxed);
            }
        }
    }
}

/// `store` for a length known at compile time (the loop unrolled).
#[inline(always)]
fn store_n<const N: usize>(m: &[AtomicU8], v: u64) {
    for (k, b) in m[..N].iter().enumerate() {
        b.store((v >> (8 * k)) as u8, Ordering::Relaxed);
    }
}

impl Cpu {
    /// Segment-relative offset → linear address, with the limit and type checks of the mode.
    pub(crate) fn linear(&self, segi: usize, offset: u64, len: u64, access: Access) -> R<u64> {
        let s = &self.state;
        let sg = &s.seg[segi];
        if s.code64() {
            let base = if segi == seg::FS || segi == seg::GS {
                sg.base
            } else {
                0
            };
            let lin = base.wrapping_add(offset);
            if !canonical(lin) || !canonical(lin.wrapping_add(len.saturating_sub(1))) {
                return Err(if segi == seg::SS {
                    Fault::ss(0)
                } else {
                    Fault::gp(0)
                });
            }
            return Ok(lin);
        }
        let fail = || {
            if segi == seg::SS {
                Fault::ss(0)
            } else {
                Fault::gp(0)
            }
        };
        if s.protected() && !s.v86() {
            if sg.unusable || !sg.present {
                return Err(fail());
            }
            let code = sg.type_ & 8 != 0;
            match access {
                Access::Write if code || sg.type_ & 2 == 0 => return Err(fail()),
                Access::Read if code && sg.type_ & 2 == 0 => return Err(fail()),
                _ => {}
            }
        }
        let last = offset.wrapping_add(len.saturating_sub(1));
        let expand_down = sg.type_ & 8 == 0 && sg.type_ & 4 != 0 && s.protected() && !s.v86();
        if expand_down {
            let upper = if sg.db { 0xffff_ffff } else { 0xffff };
            if offset <= u64::from(sg.limit) || last > upper {
                return Err(fail());
            }
        } else if last > u64::from(sg.limit) || last < offset {
            return Err(fail());
        }
        Ok(sg.base.wrapping_add(offset) & 0xffff_ffff)
    }

    /// Linear → physical through the page tables (identity when paging is off).
    pub(crate) fn translate(
        &mut self,
        lin: u64,
        access: Access,
        user: bool,
        bus: &mut dyn Bus,
    ) -> R<u64> {
        let s = &self.state;
        if s.cr0 & cr::PG == 0 {
            return Ok(lin & 0xffff_ffff);
        }
        let write = access == Access::Write;
        let fetch = access == Access::Fetch;
        let wp = s.cr0 & cr::WP != 0;
        if let Some(e) = self.tlb.lookup(lin) {
            let ok = (!user || e.user)
                && (!fetch || e.exec)
                && (!write || (e.write && (e.user_write || !user)));
            if ok {
                let phys = e.phys | (lin & 0xfff);
                if fetch {
                    self.tlb.note_fetch(lin);
                }
                return Ok(phys);
            }
        }
        let nxe = s.efer & efer::NXE != 0;
        let fault = |present: bool, rsvd: bool| {
            let mut code = u32::from(present) | (u32::from(write) << 1) | (u32::from(user) << 2);
            if rsvd {
                code |= 1 << 3;
            }
            if fetch && nxe {
                code |= 1 << 4;
            }
            Fault {
                vector: 14,
                error: Some(code),
                cr2: Some(lin),
            }
        };
        // Walk: collect the entries (address, value) from the top level down to the leaf.
        let mut entries: [(u64, u64); 4] = [(0, 0); 4];
        let mut n = 0;
        let (leaf_base, offset_mask, wide) = if s.cr4 & cr::PAE == 0 {
            let pde_addr = (s.cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4;
            let pde = read_u32(bus, pde_addr);
            if pde & P == 0 {
                return Err(fault(false, false));
            }
            entries[n] = (pde_addr, pde);
            n += 1;
            if pde & PS != 0 && s.cr4 & cr::PSE != 0 {
                let base = (pde & 0xffc0_0000) | ((pde & 0x001f_e000) << 19);
                (base, 0x3f_ffff, false)
            } else {
                let pte_addr = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
                let pte = read_u32(bus, pte_addr);
                if pte & P == 0 {
                    return Err(fault(false, false));
                }
                entries[n] = (pte_addr, pte);
                n += 1;
                (pte & 0xffff_f000, 0xfff, false)
            }
        } else {
            let mut table;
            let mut level;
            if s.long_mode() {
                table = s.cr3 & ADDR_MASK;
                level = 4;
            } else {
                let pdpte_addr = (s.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
                let pdpte = read_u64(bus, pdpte_addr);
                if pdpte & P == 0 {
                    return Err(fault(false, false));
                }
                table = pdpte & ADDR_MASK;
                level = 2;
            }
            loop {
                let shift = 12 + 9 * (level - 1);
                let addr = table + ((lin >> shift) & 0x1ff) * 8;
                let e = read_u64(bus, addr);
                if e & P == 0 {
                    return Err(fault(false, false));
                }
                if e & NX != 0 && !nxe {
                    return Err(fault(true, true));
                }
                entries[n] = (addr, e);
                n += 1;
                if level == 1 || (e & PS != 0 && level <= 3) {
                    let mask = (1u64 << shift) - 1;
                    break ((e & ADDR_MASK) & !mask, mask, true);
                }
                table = e & ADDR_MASK;
                level -= 1;
            }
        };
        // Permissions: every level must allow the access.
        let mut allow_write = true;
        let mut allow_user = true;
        let mut allow_exec = true;
        for &(_, e) in &entries[..n] {
            allow_write &= e & RW != 0;
            allow_user &= e & US != 0;
            allow_exec &= !(wide && nxe && e & NX != 0);
        }
        if (user && !allow_user)
            || (write && !allow_write && (user || wp))
            || (fetch && !allow_exec)
        {
            return Err(fault(true, false));
        }
        let leaf_dirty = entries[n - 1].1 & D != 0 || write;
        // Accessed bits everywhere, dirty on the leaf for writes.
        for (i, &(addr, e)) in entries[..n].iter().enumerate() {
            let leaf = i + 1 == n;
            let mut ne = e | A;
            if leaf && write {
                ne |= D;
            }
            if ne != e {
                if wide {
                    bus.write(addr, &ne.to_le_bytes());
                } else {
                    bus.write(addr, &(ne as u32).to_le_bytes());
                }
            }
        }
        let phys = leaf_base | (lin & offset_mask);
        self.tlb.insert(
            lin,
            crate::cache::TlbEntry {
                key: 0,
                gen: 0,
                phys: phys & !0xfff,
                // A write hit needs the dirty bit already set and write permission for
                // supervisor code (WP rules); user writes also need `user_write`.
                write: leaf_dirty && (allow_write || !wp),
                user_write: allow_write && allow_user,
                user: allow_user,
                exec: allow_exec,
                global: s.cr4 & cr::PGE != 0 && entries[n - 1].1 & G != 0,
                fetched: 0,
            },
            offset_mask,
        );
        if fetch {
            self.tlb.note_fetch(lin);
        }
        Ok(phys)
    }

    /// Reads `buf.len()` bytes at a linear address, page by page.
    pub(crate) fn read_linear(
        &mut self,
        lin: u64,
        buf: &mut [u8],
        access: Access,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let user = self.state.cpl() == 3;
        let mut done = 0;
        while done < buf.len() {
            let a = lin.wrapping_add(done as u64);
            let chunk = ((0x1000 - (a & 0xfff)) as usize).min(buf.len() - done);
            let phys = self.translate(a, access, user, bus)?;
            phys_read(phys, &mut buf[done..done + chunk], bus);
            done += chunk;
        }
        Ok(())
    }

    /// Writes physical memory, directly when it is plain RAM and the writes can be reported
    /// to the code tracker.
    #[inline]
    pub(crate) fn phys_write(&self, phys: u64, data: &[u8], bus: &mut dyn Bus) {
        if let Some(t) = &self.code {
            if let Some(m) = ram_slice(bus.ram(), phys, data.len(), true) {
                for (d, s) in m.iter().zip(data) {
                    d.store(*s, Ordering::Relaxed);
                }
                t.note_write(phys, data.len());
                return;
            }
        }
        bus.write(phys, data);
    }

    /// Writes a value of up to 8 bytes to physical memory (within one page).
    #[inline(always)]
    fn phys_write_val(&self, phys: u64, size: usize, v: u64, bus: &mut dyn Bus) {
        if let Some(t) = &self.code {
            if let Some(m) = ram_slice(bus.ram(), phys, size, true) {
                store(m, v);
                t.note_write(phys, size);
                return;
            }
        }
        bus.write(phys, &v.to_le_bytes()[..size]);
    }

    /// Writes at a linear address; all pages are translated before any byte is written.
    pub(crate) fn write_linear(&mut self, lin: u64, buf: &[u8], bus: &mut dyn Bus) -> R<()> {
        let user = self.state.cpl() == 3;
        let first_len = ((0x1000 - (lin & 0xfff)) as usize).min(buf.len());
        let p1 = self.translate(lin, Access::Write, user, bus)?;
        if first_len == buf.len() {
            self.phys_write(p1, buf, bus);
            return Ok(());
        }
        let p2 = self.translate(lin.wrapping_add(first_len as u64), Access::Write, user, bus)?;
        self.phys_write(p1, &buf[..first_len], bus);
        self.phys_write(p2, &buf[first_len..], bus);
        Ok(())
    }

    /// Reads through a segment.
    pub(crate) fn read_mem(
        &mut self,
        segi: usize,
        offset: u64,
        buf: &mut [u8],
        bus: &mut dyn Bus,
    ) -> R<()> {
        let lin = self.linear(segi, offset, buf.len() as u64, Access::Read)?;
        self.read_linear(lin, buf, Access::Read, bus)
    }

    /// Writes through a segment.
    pub(crate) fn write_mem(
        &mut self,
        segi: usize,
        offset: u64,
        buf: &[u8],
        bus: &mut dyn Bus,
    ) -> R<()> {
        let lin = self.linear(segi, offset, buf.len() as u64, Access::Write)?;
        self.write_linear(lin, buf, bus)
    }

    /// The physical address of a `size`-byte data access at `offset` in segment `segi` when
    /// no check can fail and the translation is at hand: 64-bit code (FS/GS add their base),
    /// or a flat expand-up data segment (base 0, limit 4 GiB) in protected mode; the access
    /// within one page; paging off, or a TLB entry that permits the access. `None` sends the
    /// access to the full path (`linear`, `translate`), which raises the faults.
    #[inline(always)]
    pub(crate) fn fast_phys(
        &self,
        segi: usize,
        offset: u64,
        size: usize,
        write: bool,
    ) -> Option<u64> {
        let s = &self.state;
        let sg = &s.seg[segi];
        let lin = if s.efer & efer::LMA != 0 && s.seg[seg::CS].l {
            let lin = if segi >= seg::FS {
                sg.base.wrapping_add(offset)
            } else {
                offset
            };
            // Within one page the last byte is canonical when the first is.
            if !canonical(lin) {
                return None;
            }
            lin
        } else {
            let flat = s.cr0 & cr::PE != 0
                && s.rflags & flags::VM == 0
                && sg.base == 0
                && sg.limit == u32::MAX
                && sg.present
                && !sg.unusable
                && sg.type_ & 0xc == 0
                && (!write || sg.type_ & 2 != 0)
                && offset <= 0x1_0000_0000 - size as u64;
            if !flat {
                return None;
            }
            offset
        };
        if (lin & 0xfff) as usize + size > 0x1000 {
            return None;
        }
        if s.cr0 & cr::PG == 0 {
            return Some(lin & 0xffff_ffff);
        }
        let e = self.tlb.lookup(lin)?;
        let user = s.cpl() == 3;
        let ok = (!user || e.user) && (!write || (e.write && (e.user_write || !user)));
        ok.then_some(e.phys | (lin & 0xfff))
    }

    /// Reads a little-endian value of `size` bytes through a segment.
    #[inline(always)]
    pub(crate) fn read_val(
        &mut self,
        segi: usize,
        offset: u64,
        size: usize,
        bus: &mut dyn Bus,
    ) -> R<u64> {
        if let Some(phys) = self.fast_phys(segi, offset, size, false) {
            if let Some(m) = ram_slice(bus.ram(), phys, size, false) {
                return Ok(load(m));
            }
        }
        self.read_val_full(segi, offset, size, bus)
    }

    #[inline(never)]
    fn read_val_full(
        &mut self,
        segi: usize,
        offset: u64,
        size: usize,
        bus: &mut dyn Bus,
    ) -> R<u64> {
        let lin = self.linear(segi, offset, size as u64, Access::Read)?;
        if (lin & 0xfff) as usize + size <= 0x1000 {
            let user = self.state.cpl() == 3;
            let phys = self.translate(lin, Access::Read, user, bus)?;
            if let Some(m) = ram_slice(bus.ram(), phys, size, false) {
                let v = load(m);
                self.ram_fill(lin, phys, user, false, bus);
                return Ok(v);
            }
            let mut b = [0u8; 8];
            bus.read(phys, &mut b[..size]);
            return Ok(u64::from_le_bytes(b));
        }
        let mut b = [0u8; 8];
        self.read_linear(lin, &mut b[..size], Access::Read, bus)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian value of `size` bytes through a segment.
    #[inline(always)]
    pub(crate) fn write_val(
        &mut self,
        segi: usize,
        offset: u64,
        size: usize,
        v: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        if let Some(phys) = self.fast_phys(segi, offset, size, true) {
            self.phys_write_val(phys, size, v, bus);
            return Ok(());
        }
        self.write_val_full(segi, offset, size, v, bus)
    }

    #[inline(never)]
    fn write_val_full(
        &mut self,
        segi: usize,
        offset: u64,
        size: usize,
        v: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let lin = self.linear(segi, offset, size as u64, Access::Write)?;
        if (lin & 0xfff) as usize + size <= 0x1000 {
            let user = self.state.cpl() == 3;
            let phys = self.translate(lin, Access::Write, user, bus)?;
            self.phys_write_val(phys, size, v, bus);
            if self.code.is_some() {
                self.ram_fill(lin, phys, user, true, bus);
            }
            return Ok(());
        }
        self.write_linear(lin, &v.to_le_bytes()[..size], bus)
    }

    /// Records where the page of a data access that just succeeded lies in direct RAM, for
    /// [`Cpu::ram_direct`]. Writes are recorded only for writable RAM.
    fn ram_fill(&mut self, lin: u64, phys: u64, user: bool, write: bool, bus: &mut dyn Bus) {
        let page = phys & !0xfff;
        let Some((region, r)) = bus.ram().iter().enumerate().find(|(_, r)| {
            page.checked_sub(r.start)
                .and_then(|off| off.checked_add(0x1000))
                .is_some_and(|end| end <= r.bytes.len() as u64)
        }) else {
            return;
        };
        if write && !r.writable {
            return;
        }
        let offset = (page - r.start) as usize;
        let place = crate::cache::RamPlace {
            region,
            start: r.start,
            offset,
            host: r.bytes.as_ptr() as usize + offset,
            code: self
                .code
                .as_ref()
                .map_or_else(crate::cache::no_code_word, |t| t.word_address(page)),
        };
        let paging = self.state.cr0 & cr::PG != 0;
        let global = paging && self.tlb.lookup(lin).is_some_and(|e| e.global);
        let key = crate::cache::ram_key(lin, paging, user);
        self.tlb.ram_insert(key, place, write, global);
    }

    /// The data view of the current mode: which segments need no checks for RAM accesses
    /// within one page (see [`DataView`]).
    pub(crate) fn data_view(&self) -> DataView {
        let s = &self.state;
        let mut v = DataView {
            base: [0; 6],
            read: 0,
            write: 0,
            high: 0,
            key: crate::cache::ram_key(0, s.cr0 & cr::PG != 0, s.cpl() == 3),
            stack_mask: self.stack_mask(),
            cs_limit: if s.code64() {
                u64::MAX
            } else {
                u64::from(s.seg[seg::CS].limit)
            },
            cs_base: if s.code64() { 0 } else { s.seg[seg::CS].base },
        };
        if s.code64() {
            v.base[seg::FS] = s.seg[seg::FS].base;
            v.base[seg::GS] = s.seg[seg::GS].base;
            v.read = 0x3f;
            v.write = 0x3f;
        } else if s.cr0 & cr::PE != 0 && s.rflags & flags::VM == 0 {
            v.high = !0xffff_ffff;
            for (k, sg) in s.seg.iter().enumerate() {
                let flat = sg.base == 0
                    && sg.limit == u32::MAX
                    && sg.present
                    && !sg.unusable
                    && sg.type_ & 0xc == 0;
                if flat {
                    v.read |= 1 << k;
                    if sg.type_ & 2 != 0 {
                        v.write |= 1 << k;
                    }
                }
            }
        }
        v
    }

    /// The RAM of a `size`-byte data access at `offset` in segment `segi`, and its physical
    /// address, when the view lets it skip the segment checks, it lies in one page and the
    /// page's RAM entry allows it. `None` sends the access to the full path.
    #[inline(always)]
    pub(crate) fn ram_direct<'b>(
        &self,
        v: &DataView,
        regions: &'b [RamRegion<'b>],
        segi: usize,
        offset: u64,
        size: usize,
        write: bool,
    ) -> Option<(&'b [AtomicU8], u64)> {
        let allowed = if write { v.write } else { v.read };
        if allowed & (1 << segi) == 0 {
            return None;
        }
        let lin = v.base[segi].wrapping_add(offset);
        if lin & v.high != 0 || (lin & 0xfff) as usize + size > 0x1000 {
            return None;
        }
        let e = self.tlb.ram_entry(lin);
        let key = (lin & !0xfff) | v.key;
        if (if write { e.write } else { e.read }) != key {
            return None;
        }
        let r = regions.get(e.region)?;
        if r.start != e.start || (write && !r.writable) {
            return None;
        }
        let off = e.offset + (lin & 0xfff) as usize;
        Some((r.bytes.get(off..off + size)?, e.start + off as u64))
    }

    /// Reads a little-endian value through a segment, directly from RAM when the view allows.
    #[inline(always)]
    pub(crate) fn read_direct(
        &mut self,
        v: &DataView,
        segi: usize,
        offset: u64,
        size: usize,
        bus: &mut dyn Bus,
    ) -> R<u64> {
        if let Some((m, _)) = self.ram_direct(v, bus.ram(), segi, offset, size, false) {
            return Ok(load(m));
        }
        self.read_val_full(segi, offset, size, bus)
    }

    /// Writes a little-endian value through a segment, directly to RAM when the view allows.
    #[inline(always)]
    pub(crate) fn write_direct(
        &mut self,
        v: &DataView,
        segi: usize,
        offset: u64,
        size: usize,
        value: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        if let Some(t) = &self.code {
            if let Some((m, phys)) = self.ram_direct(v, bus.ram(), segi, offset, size, true) {
                store(m, value);
                t.note_write(phys, size);
                return Ok(());
            }
        }
        self.write_val_full(segi, offset, size, value, bus)
    }

    /// Reads a value at a linear address with supervisor rights (descriptor tables, TSS).
    pub(crate) fn read_sys(&mut self, lin: u64, size: usize, bus: &mut dyn Bus) -> R<u64> {
        let mut b = [0u8; 8];
        let mut done = 0;
        while done < size {
            let a = lin.wrapping_add(done as u64);
            let chunk = ((0x1000 - (a & 0xfff)) as usize).min(size - done);
            let phys = self.translate(a, Access::Read, false, bus)?;
            phys_read(phys, &mut b[done..done + chunk], bus);
            done += chunk;
        }
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a value at a linear address with supervisor rights.
    pub(crate) fn write_sys(&mut self, lin: u64, size: usize, v: u64, bus: &mut dyn Bus) -> R<()> {
        let phys = self.translate(lin, Access::Write, false, bus)?;
        let first = ((0x1000 - (lin & 0xfff)) as usize).min(size);
        bus.write(phys, &v.to_le_bytes()[..first]);
        if first < size {
            let p2 = self.translate(lin + first as u64, Access::Write, false, bus)?;
            bus.write(p2, &v.to_le_bytes()[first..size]);
        }
        Ok(())
    }
}

/// Reads physical memory, directly when it is plain RAM.
#[inline]
pub(crate) fn phys_read(phys: u64, buf: &mut [u8], bus: &mut dyn Bus) {
    if let Some(m) = ram_slice(bus.ram(), phys, buf.len(), false) {
        for (d, s) in buf.iter_mut().zip(m) {
            *d = s.load(Ordering::Relaxed);
        }
        return;
    }
    bus.read(phys, buf);
}

/// True when the top 17 bits of a 48-bit address agree.
#[inline]
pub fn canonical(a: u64) -> bool {
    let top = (a as i64) >> 47;
    top == 0 || top == -1
}

/// How data accesses through each segment reach RAM without segment checks, fixed while the
/// segment registers, the mode and the CPL are (the block engine computes it when it looks up
/// a block the full way, and keeps it while only block-continuing instructions run).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataView {
    /// Base added to the offset, per segment (FS and GS in 64-bit mode; 0 otherwise).
    pub(crate) base: [u64; 6],
    /// Segments (a bit per index) whose reads need no checks: all in 64-bit mode, flat
    /// expand-up data segments in protected mode.
    read: u8,
    /// The same for writes (flat writable data segments).
    write: u8,
    /// Linear address bits that send an access the full way (above 4 GiB outside 64-bit
    /// mode; non-canonical 64-bit addresses never match a RAM entry).
    high: u64,
    /// The RAM entry key bits of the mode (paging, user), with the valid bit.
    pub(crate) key: u64,
    /// Mask of the stack pointer (by the stack size).
    pub(crate) stack_mask: u64,
    /// Largest RIP outside 64-bit mode (the CS limit).
    pub(crate) cs_limit: u64,
    /// CS base outside 64-bit mode (linked native code relies on it: see [`crate::native`]).
    pub(crate) cs_base: u64,
}

impl DataView {
    /// The same view (a branch-free comparison).
    #[inline]
    pub(crate) fn same(&self, o: &Self) -> bool {
        let mut d = u64::from(self.read ^ o.read)
            | u64::from(self.write ^ o.write)
            | (self.high ^ o.high)
            | (self.key ^ o.key)
            | (self.stack_mask ^ o.stack_mask)
            | (self.cs_limit ^ o.cs_limit)
            | (self.cs_base ^ o.cs_base);
        for (a, b) in self.base.iter().zip(&o.base) {
            d |= a ^ b;
        }
        d == 0
    }

    /// The view as code that accesses memory only through the segments in `segs` (a bit per
    /// index) depends on: the others' bases and permissions cleared.
    pub(crate) fn only(&self, segs: u8) -> Self {
        let mut v = *self;
        for (s, b) in v.base.iter_mut().enumerate() {
            if segs & (1 << s) == 0 {
                *b = 0;
            }
        }
        v.read &= segs;
        v.write &= segs;
        v
    }

    /// The view of 64-bit kernel code with paging on and FS and GS at 0 (for tests).
    #[cfg(test)]
    pub(crate) fn long_mode() -> Self {
        DataView {
            base: [0; 6],
            read: 0x3f,
            write: 0x3f,
            high: 0,
            key: crate::cache::ram_key(0, true, false),
            stack_mask: u64::MAX,
            cs_limit: u64::MAX,
            cs_base: 0,
        }
    }

    /// True when accesses through segment `seg` with offsets masked by `amask` need no
    /// segment checks and their linear addresses no further masking.
    pub(crate) fn direct(&self, seg: usize, amask: u64, write: bool) -> bool {
        let allowed = if write { self.write } else { self.read };
        allowed & (1 << seg) != 0
            && (self.high == 0 || (self.base[seg] == 0 && amask <= 0xffff_ffff))
    }
}
