//! What the detectors found: weighted OS hints, name candidates and evidence lines, and the
//! decision made from them.

use crate::OsFamily;

/// Most evidence lines kept.
const MAX_EVIDENCE: usize = 32;
/// Longest evidence line, in characters.
const MAX_EVIDENCE_CHARS: usize = 120;
/// Longest OS name or label, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 64;
/// A family needs at least this score to be reported.
const MIN_SCORE: u32 = 10;

/// Name priorities (higher wins within a family).
pub(crate) mod prio {
    /// A generic family name ("Linux", "Windows").
    pub const GENERIC: u8 = 1;
    /// Guessed from a directory layout.
    pub const LAYOUT: u8 = 20;
    /// Taken from a volume label.
    pub const LABEL: u8 = 40;
    /// Taken from a boot menu title.
    pub const MENU: u8 = 50;
    /// Said by system files (Windows setup markers, DOS kernels).
    pub const FILES: u8 = 60;
    /// Taken from a file whose purpose is naming the OS (`.disk/info`).
    pub const INFO: u8 = 100;
}

/// Everything learned about an image.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    scores: [u32; 6],
    names: Vec<(OsFamily, u8, String)>,
    /// Human-readable reasons, in the order found.
    pub(crate) evidence: Vec<String>,
    /// Volume label, the first one found.
    pub(crate) label: Option<String>,
    /// Whether firmware could boot it.
    pub(crate) bootable: bool,
}

fn family_index(f: OsFamily) -> usize {
    OsFamily::ALL.iter().position(|&x| x == f).unwrap_or(5)
}

impl Findings {
    /// Adds `weight` for `family`, with a reason.
    pub(crate) fn hint(&mut self, family: OsFamily, weight: u32, why: impl Into<String>) {
        let i = family_index(family);
        if let Some(s) = self.scores.get_mut(i) {
            *s = s.saturating_add(weight);
        }
        self.note(why);
    }

    /// Offers `name` as the OS name should `family` win.
    pub(crate) fn name(&mut self, family: OsFamily, priority: u8, name: &str) {
        let name = clean_text(name, MAX_NAME_CHARS);
        if !name.is_empty() && self.names.len() < 64 {
            self.names.push((family, priority, name));
        }
    }

    /// Records a reason without weighing in.
    pub(crate) fn note(&mut self, why: impl Into<String>) {
        let why = clean_text(&why.into(), MAX_EVIDENCE_CHARS);
        if !why.is_empty() && self.evidence.len() < MAX_EVIDENCE && !self.evidence.contains(&why) {
            self.evidence.push(why);
        }
    }

    /// Sets the volume label unless one is known already.
    pub(crate) fn set_label(&mut self, raw: &str) {
        if self.label.is_none() {
            let l = clean_text(raw, MAX_NAME_CHARS);
            if !l.is_empty() && !l.eq_ignore_ascii_case("NO NAME") {
                self.label = Some(l);
            }
        }
    }

    /// Score of `family` so far.
    pub(crate) fn score(&self, family: OsFamily) -> u32 {
        self.scores.get(family_index(family)).copied().unwrap_or(0)
    }

    /// The family with the highest score (earliest in [`OsFamily::ALL`] on ties) and its best
    /// name.
    pub(crate) fn decide(&self) -> (OsFamily, Option<String>) {
        let mut best = OsFamily::Other;
        let mut best_score = 0;
        for f in OsFamily::ALL {
            let s = self.score(f);
            if f != OsFamily::Other && s >= MIN_SCORE && s > best_score {
                best = f;
                best_score = s;
            }
        }
        if best == OsFamily::Other {
            return (best, None);
        }
        let mut name: Option<(u8, &str)> = None;
        for (f, p, n) in &self.names {
            if *f == best && name.is_none_or(|(bp, _)| *p > bp) {
                name = Some((*p, n));
            }
        }
        let name = name.map(|(_, n)| n.to_string()).unwrap_or_else(|| {
            match best {
                OsFamily::Linux => "Linux",
                OsFamily::Windows => "Windows",
                OsFamily::Dos => "DOS",
                OsFamily::Bsd => "BSD",
                OsFamily::MemTest => "memtest86+",
                OsFamily::Other => "",
            }
            .to_string()
        });
        (best, Some(name))
    }
}

/// Printable text from untrusted bytes or strings: control characters dropped, whitespace
/// runs collapsed, trimmed, at most `max` characters.
pub(crate) fn clean_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c == '\0' {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || c == '\u{FFFD}' {
            continue;
        }
        if space {
            if n + 1 >= max {
                break;
            }
            out.push(' ');
            n += 1;
            space = false;
        }
        if n >= max {
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// Text from untrusted bytes (lossy UTF-8), cleaned like [`clean_text`].
pub(crate) fn clean_bytes(b: &[u8], max: usize) -> String {
    clean_text(&String::from_utf8_lossy(b), max)
}

/// Splits text into lowercase words of letters and digits (`.` and `+` kept inside words, so
/// versions and "memtest86+" stay whole).
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '+' || c == '!'))
        .map(|w| w.trim_matches('.').to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .take(64)
        .collect()
}

/// Distribution words and their display names (all Linux).
const LINUX_DISTROS: &[(&str, &str)] = &[
    ("debian", "Debian GNU/Linux"),
    ("ubuntu", "Ubuntu"),
    ("kubuntu", "Kubuntu"),
    ("xubuntu", "Xubuntu"),
    ("lubuntu", "Lubuntu"),
    ("fedora", "Fedora"),
    ("centos", "CentOS"),
    ("rhel", "Red Hat Enterprise Linux"),
    ("rocky", "Rocky Linux"),
    ("almalinux", "AlmaLinux"),
    ("opensuse", "openSUSE"),
    ("sles", "SUSE Linux Enterprise"),
    ("sle", "SUSE Linux Enterprise"),
    ("archlinux", "Arch Linux"),
    ("alpine", "Alpine Linux"),
    ("gentoo", "Gentoo"),
    ("slackware", "Slackware"),
    ("manjaro", "Manjaro"),
    ("kali", "Kali Linux"),
    ("knoppix", "Knoppix"),
    ("mint", "Linux Mint"),
    ("linuxmint", "Linux Mint"),
    ("tinycore", "Tiny Core Linux"),
    ("corepure64", "Tiny Core Linux"),
    ("nixos", "NixOS"),
    ("clonezilla", "Clonezilla"),
    ("gparted", "GParted Live"),
    ("systemrescue", "SystemRescue"),
    ("sysrcd", "SystemRescue"),
    ("zorin", "Zorin OS"),
    ("elementary", "elementary OS"),
    ("pop_os", "Pop!_OS"),
    ("pop!_os", "Pop!_OS"),
    ("endeavouros", "EndeavourOS"),
    ("tails", "Tails"),
    ("puppy", "Puppy Linux"),
    ("mageia", "Mageia"),
    ("devuan", "Devuan GNU/Linux"),
];

/// Words that end the search for a version (architectures and the like).
const STOP_WORDS: &[&str] = &[
    "x86", "64", "32", "amd64", "i386", "i686", "arm64", "aarch64", "x64", "bit", "64bit",
];

/// A version-looking word: digits and dots, first part at most three digits.
fn version_word(w: &str) -> Option<&str> {
    let first = w.split('.').next()?;
    let ok = !first.is_empty()
        && first.len() <= 3
        && w.chars().all(|c| c.is_ascii_digit() || c == '.')
        && w.split('.').count() <= 4;
    ok.then_some(w)
}

/// The version following the word at `at`, looking at most three words ahead.
fn version_after(ws: &[String], at: usize) -> Option<String> {
    for w in ws.iter().skip(at + 1).take(3) {
        if STOP_WORDS.contains(&w.as_str()) {
            return None;
        }
        if let Some(v) = version_word(w) {
            return Some(v.to_string());
        }
    }
    None
}

/// A known OS named in free text (a label or menu title): family and display name with
/// version where one follows.
pub(crate) fn os_in_text(text: &str) -> Option<(OsFamily, String)> {
    let ws = words(text);
    let with_version = |base: &str, at: usize| match version_after(&ws, at) {
        Some(v) => format!("{base} {v}"),
        None => base.to_string(),
    };
    for (i, w) in ws.iter().enumerate() {
        if let Some((_, name)) = LINUX_DISTROS.iter().find(|(k, _)| k == w) {
            // "mint"/"tails"/"elementary"/"puppy" are ordinary words; want a second clue.
            let weak = matches!(
                w.as_str(),
                "mint" | "tails" | "elementary" | "puppy" | "sle"
            );
            if weak && !text.to_ascii_lowercase().contains("linux") && ws.len() > 1 {
                let next_is_version = version_after(&ws, i).is_some();
                if !next_is_version {
                    continue;
                }
            }
            return Some((OsFamily::Linux, with_version(name, i)));
        }
        if w == "arch" {
            let next = ws.get(i + 1).map(String::as_str);
            if i == 0 || next == Some("linux") {
                return Some((OsFamily::Linux, "Arch Linux".to_string()));
            }
        }
        if w == "red" && ws.get(i + 1).map(String::as_str) == Some("hat") {
            return Some((OsFamily::Linux, "Red Hat Enterprise Linux".to_string()));
        }
        for (k, name) in [
            ("freebsd", "FreeBSD"),
            ("openbsd", "OpenBSD"),
            ("netbsd", "NetBSD"),
            ("dragonfly", "DragonFly BSD"),
            ("ghostbsd", "GhostBSD"),
        ] {
            if w == k {
                return Some((OsFamily::Bsd, with_version(name, i)));
            }
        }
        if w == "freedos" {
            return Some((OsFamily::Dos, "FreeDOS".to_string()));
        }
        if let Some(name) = windows_word(w) {
            return Some((OsFamily::Windows, name.to_string()));
        }
        if w.starts_with("memtest86") || w == "mt86plus" {
            let name = if w.contains('+') || w.contains("plus") || text.contains("86+") {
                "memtest86+"
            } else {
                "MemTest86"
            };
            return Some((OsFamily::MemTest, name.to_string()));
        }
    }
    None
}

/// "win10", "windows" and the like.
fn windows_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "windows" => "Windows",
        "win11" => "Windows 11",
        "win10" => "Windows 10",
        "win8" | "win81" | "win8.1" => "Windows 8",
        "win7" => "Windows 7",
        "winxp" => "Windows XP",
        "win98" => "Windows 98",
        "win95" => "Windows 95",
        _ => return None,
    })
}

/// Windows volume labels of Microsoft's install media ("CCCOMA_X64FRE_EN-US_DV9").
pub(crate) fn windows_label(label: &str) -> Option<&'static str> {
    let l = label.to_ascii_uppercase();
    const TEN: &[&str] = &[
        "CCCOMA_", "CCSA_", "CPBA_", "CENA_", "CCSNA_", "CPRA_", "J_CCSA",
    ];
    if TEN.iter().any(|p| l.starts_with(p)) {
        return Some("Windows 10/11");
    }
    if l.starts_with("IR5_") || l.starts_with("IR3_") || l.starts_with("HB1_") {
        return Some("Windows 8");
    }
    if l.starts_with("GRMC") || l.starts_with("GSP1RMC") {
        return Some("Windows 7");
    }
    if l.starts_with("SSS_") {
        return Some("Windows Server 2022");
    }
    if l.starts_with("WXP") || l.starts_with("GRTMP") || l.starts_with("VRMP") {
        return Some("Windows XP");
    }
    let fre = ["X64FRE", "X86FRE", "A64FRE", "ULFRER", "ULXFRER", "FRER_"]
        .iter()
        .any(|m| l.contains(m));
    if fre || l.starts_with("ESD-ISO") {
        return Some("Windows");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_labels() {
        let t = |s: &str| os_in_text(s);
        assert_eq!(
            t("Debian 12.5.0 amd64 n"),
            Some((OsFamily::Linux, "Debian GNU/Linux 12.5.0".into()))
        );
        assert_eq!(
            t("Ubuntu-Server 22.04.3 LTS amd64"),
            Some((OsFamily::Linux, "Ubuntu 22.04.3".into()))
        );
        assert_eq!(
            t("Fedora-WS-Live-39-1-5"),
            Some((OsFamily::Linux, "Fedora 39".into()))
        );
        assert_eq!(
            t("ARCH_202401"),
            Some((OsFamily::Linux, "Arch Linux".into()))
        );
        assert_eq!(t("RESEARCH DATA"), None);
        assert_eq!(t("TERRARIUM_TEST"), None);
        assert_eq!(
            t("alpine-std 3.19.1 x86_64"),
            Some((OsFamily::Linux, "Alpine Linux 3.19.1".into()))
        );
        assert_eq!(
            t("openSUSE-Leap-15.5-DVD-x86_64"),
            Some((OsFamily::Linux, "openSUSE 15.5".into()))
        );
        assert_eq!(
            t("Memtest86+ 6.10"),
            Some((OsFamily::MemTest, "memtest86+".into()))
        );
        assert_eq!(
            windows_label("CCCOMA_X64FRE_EN-US_DV9"),
            Some("Windows 10/11")
        );
        assert_eq!(windows_label("GRMCULFRER_EN_DVD"), Some("Windows 7"));
        assert_eq!(windows_label("TERRARIUM_TEST"), None);
    }

    #[test]
    fn decision_picks_highest_score_and_best_name() {
        let mut f = Findings::default();
        f.hint(OsFamily::Dos, 10, "partition 1 type 0x06 (FAT16)");
        f.hint(OsFamily::Linux, 40, "syslinux.cfg boots /vmlinuz");
        f.name(OsFamily::Linux, prio::GENERIC, "Linux");
        f.name(OsFamily::Linux, prio::LABEL, "Fedora 39");
        f.name(OsFamily::Dos, prio::FILES, "FreeDOS");
        assert_eq!(f.decide(), (OsFamily::Linux, Some("Fedora 39".into())));
        assert_eq!(Findings::default().decide(), (OsFamily::Other, None));
    }

    #[test]
    fn text_is_cleaned() {
        assert_eq!(clean_text("  a\u{7}b \t\n c  ", 10), "ab c");
        assert_eq!(clean_text("abcdef", 3), "abc");
        assert_eq!(clean_bytes(b"DEB\xffIAN\0\0 ", 10), "DEBIAN");
    }
}
