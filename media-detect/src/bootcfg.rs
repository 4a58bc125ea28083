//! Boot loader configurations: SYSLINUX/ISOLINUX/EXTLINUX and GRUB (2 and legacy), followed
//! through their `include`/`source` lines.

use crate::fs::{components, Walker};
use crate::source::Reader;

/// Most configuration files read for one image.
const MAX_FILES: usize = 24;
/// Most lines read from one file.
const MAX_LINES: usize = 4000;
/// Deepest include nesting followed.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Most items kept in each list.
const MAX_ITEMS: usize = 32;

/// Which configuration language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SYSLINUX, ISOLINUX, EXTLINUX, PXELINUX.
    Syslinux,
    /// GRUB 2 `grub.cfg` and GRUB legacy `menu.lst`.
    Grub,
}

/// What a boot loader may start, by kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Linux kernel.
    Linux,
    /// A memory tester.
    MemTest,
    /// The Windows boot manager or NTLDR.
    Windows,
    /// Another disk's boot sector.
    Chain,
    /// A BSD kernel or loader.
    Bsd,
    /// A loader module, menu or something unknown.
    Other,
}

/// What the configuration files of one image boot.
#[derive(Debug, Default)]
pub(crate) struct BootConfig {
    /// (config file, target path) for each boot entry, by kind.
    pub(crate) entries: Vec<(Target, String, String)>,
    /// Menu titles and entry labels, in order.
    pub(crate) titles: Vec<String>,
    /// Config files read, as looked up.
    pub(crate) files: Vec<String>,
}

impl BootConfig {
    fn push(&mut self, t: Target, file: &str, path: &str) {
        if t != Target::Other && self.entries.len() < MAX_ITEMS {
            self.entries.push((t, file.to_string(), path.to_string()));
        }
    }

    fn title(&mut self, t: &str) {
        let t = t.trim();
        if !t.is_empty() && self.titles.len() < MAX_ITEMS {
            self.titles.push(t.to_string());
        }
    }

    /// The entries of kind `t`.
    pub(crate) fn of(&self, t: Target) -> impl Iterator<Item = &(Target, String, String)> {
        self.entries.iter().filter(move |e| e.0 == t)
    }

    /// Reads the configuration at `path` (and what it includes) into `self`; false if there is
    /// no such file.
    pub(crate) fn read(
        &mut self,
        r: &mut Reader<'_>,
        w: &mut Walker<'_>,
        path: &str,
        dialect: Dialect,
    ) -> bool {
        let cwd = match path.rfind('/') {
            Some(i) => &path[..i],
            None => "",
        };
        let mut default = None;
        let mut labels = Vec::new();
        let found = self.read_file(r, w, path, cwd, dialect, 0, &mut default, &mut labels);
        if let Some(d) = default {
            // SYSLINUX's `default` names a label, or else a kernel.
            if !labels.iter().any(|l: &String| l.eq_ignore_ascii_case(&d)) {
                self.push(classify(&d), path, &d);
            }
        }
        found
    }

    #[allow(clippy::too_many_arguments)]
    fn read_file(
        &mut self,
        r: &mut Reader<'_>,
        w: &mut Walker<'_>,
        path: &str,
        cwd: &str,
        dialect: Dialect,
        depth: usize,
        default: &mut Option<String>,
        labels: &mut Vec<String>,
    ) -> bool {
        let Some(parts) = components(path) else {
            return false;
        };
        let norm = parts.join("/").to_ascii_lowercase();
        if depth > MAX_INCLUDE_DEPTH
            || self.files.len() >= MAX_FILES
            || self.files.iter().any(|f| f.eq_ignore_ascii_case(&norm))
        {
            return false;
        }
        let Some(data) = w.read(r, &norm) else {
            return false;
        };
        self.files.push(norm.clone());
        let text = String::from_utf8_lossy(&data).into_owned();
        let mut includes = Vec::new();
        for line in text.lines().take(MAX_LINES) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kw, rest) = split_word(line);
            let kw = kw.to_ascii_lowercase();
            let arg = split_word(rest).0;
            match dialect {
                Dialect::Syslinux => match kw.as_str() {
                    "kernel" | "linux" | "com32" | "boot" | "bss" | "pxe" | "fdimage" => {
                        self.push(classify(arg), &norm, arg);
                    }
                    "include" | "config" => includes.push(arg.to_string()),
                    "append" => {
                        let l = rest.to_ascii_lowercase();
                        if l.contains("ntldr") || l.contains("bootmgr") {
                            self.push(Target::Windows, &norm, arg);
                        }
                    }
                    "label" if labels.len() < 256 => labels.push(arg.to_string()),
                    "default" if default.is_none() && !arg.is_empty() => {
                        *default = Some(arg.to_string());
                    }
                    "menu" => {
                        let (sub, rest2) = split_word(rest);
                        match sub.to_ascii_lowercase().as_str() {
                            "title" | "label" => self.title(&rest2.replace('^', "")),
                            "include" => includes.push(split_word(rest2).0.to_string()),
                            _ => {}
                        }
                    }
                    _ => {}
                },
                Dialect::Grub => match kw.as_str() {
                    "menuentry" | "submenu" => self.title(&quoted(rest)),
                    "title" => self.title(rest),
                    "linux" | "linux16" | "linuxefi" | "kernel" => {
                        self.push(classify(arg), &norm, arg);
                    }
                    "multiboot" | "multiboot2" if classify(arg) == Target::MemTest => {
                        self.push(Target::MemTest, &norm, arg);
                    }
                    "chainloader" | "ntldr" => {
                        let t = match classify(arg) {
                            Target::Windows => Target::Windows,
                            _ if kw == "ntldr" => Target::Windows,
                            _ => Target::Chain,
                        };
                        self.push(t, &norm, arg);
                    }
                    "kfreebsd" | "kopenbsd" | "knetbsd" => self.push(Target::Bsd, &norm, arg),
                    "source" | "configfile" if !arg.contains('$') && !arg.contains('(') => {
                        includes.push(format!("/{}", arg.trim_matches(['"', '\''])));
                    }
                    _ => {}
                },
            }
        }
        for inc in includes {
            let p = if inc.starts_with('/') {
                inc
            } else {
                format!("{cwd}/{inc}")
            };
            self.read_file(r, w, &p, cwd, dialect, depth + 1, default, labels);
        }
        true
    }
}

/// The first whitespace-separated word and the trimmed rest.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// A GRUB menu entry title: the first quoted string, or the first word that is not an option.
fn quoted(rest: &str) -> String {
    if let Some(i) = rest.find(['\'', '"']) {
        let q = rest[i..].chars().next().unwrap_or('\'');
        let after = &rest[i + q.len_utf8()..];
        return match after.find(q) {
            Some(j) => after[..j].to_string(),
            None => after.to_string(),
        };
    }
    rest.split_whitespace()
        .find(|w| !w.starts_with("--") && *w != "{")
        .unwrap_or("")
        .to_string()
}

/// What kind of file a boot line starts, judged by its name.
pub(crate) fn classify(path: &str) -> Target {
    let base = path
        .rsplit(['/', '\\', ')'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if base.is_empty() {
        return Target::Other;
    }
    if base.contains("memtest") || base.starts_with("mt86") {
        return Target::MemTest;
    }
    if base == "ntldr" || base.starts_with("bootmgr") || base == "cmldr" {
        return Target::Windows;
    }
    if base == "chain.c32" {
        return Target::Chain;
    }
    if base.starts_with("vmlinu") || base.starts_with("bzimage") {
        return Target::Linux;
    }
    if base == "loader" || base == "kernel" && path.contains("boot/kernel") {
        return Target::Bsd;
    }
    const NOT_LINUX: &[&str] = &[
        ".c32", ".com", ".cbt", ".0", ".bin", ".bss", ".bs", ".img", ".ima", ".iso", ".efi",
        ".lkrn", ".krn", ".sys", ".exe", ".gz", ".mod",
    ];
    if NOT_LINUX.iter().any(|x| base.ends_with(x))
        || matches!(
            base.as_str(),
            "memdisk" | "ipxe" | "pxelinux" | "hdt" | "grub" | "grldr"
        )
    {
        return Target::Other;
    }
    Target::Linux
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_boot_files() {
        assert_eq!(classify("/boot/vmlinuz"), Target::Linux);
        assert_eq!(classify("/casper/vmlinuz.efi"), Target::Linux);
        assert_eq!(classify("linux"), Target::Linux);
        assert_eq!(classify("/install.amd/vmlinuz"), Target::Linux);
        assert_eq!(classify("/memtest.bin"), Target::MemTest);
        assert_eq!(classify("/boot/memtest86+x64.bin"), Target::MemTest);
        assert_eq!(classify("vesamenu.c32"), Target::Other);
        assert_eq!(classify("chain.c32"), Target::Chain);
        assert_eq!(classify("(hd0,1)/bootmgr"), Target::Windows);
        assert_eq!(classify("memdisk"), Target::Other);
        assert_eq!(classify(""), Target::Other);
    }

    #[test]
    fn grub_titles() {
        assert_eq!(
            quoted("--hotkey=g 'Graphical install' {"),
            "Graphical install"
        );
        assert_eq!(quoted("\"Ubuntu\" --class ubuntu {"), "Ubuntu");
        assert_eq!(quoted("Memtest {"), "Memtest");
        assert_eq!(quoted("'unterminated"), "unterminated");
    }
}
