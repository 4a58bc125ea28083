//! Host keys (as egui reports them) to the guest's PC keyboard keys.

use egui::Key as K;
use machine::Key;

/// The PC key at the position of the host key `key`, if the guest keyboard has one.
///
/// egui reports physical keys for the modifier keys and logical keys otherwise; the console
/// prefers `physical_key` when the event has one, so the guest gets positions (a guest with
/// another keyboard layout maps them itself, as on real hardware).
pub fn pc_key(key: K) -> Option<Key> {
    Some(match key {
        K::ArrowDown => Key::ArrowDown,
        K::ArrowLeft => Key::ArrowLeft,
        K::ArrowRight => Key::ArrowRight,
        K::ArrowUp => Key::ArrowUp,
        K::Escape => Key::Escape,
        K::Tab => Key::Tab,
        K::Backspace => Key::Backspace,
        K::Enter => Key::Enter,
        K::Space => Key::Space,
        K::Insert => Key::Insert,
        K::Delete => Key::Delete,
        K::Home => Key::Home,
        K::End => Key::End,
        K::PageUp => Key::PageUp,
        K::PageDown => Key::PageDown,
        K::Comma => Key::Comma,
        K::Backslash => Key::Backslash,
        K::Slash => Key::Slash,
        K::OpenBracket => Key::BracketLeft,
        K::CloseBracket => Key::BracketRight,
        K::Backtick => Key::Backquote,
        K::Minus => Key::Minus,
        K::Period => Key::Period,
        K::Equals => Key::Equal,
        K::Semicolon => Key::Semicolon,
        K::Quote => Key::Quote,
        K::Num0 => Key::Digit0,
        K::Num1 => Key::Digit1,
        K::Num2 => Key::Digit2,
        K::Num3 => Key::Digit3,
        K::Num4 => Key::Digit4,
        K::Num5 => Key::Digit5,
        K::Num6 => Key::Digit6,
        K::Num7 => Key::Digit7,
        K::Num8 => Key::Digit8,
        K::Num9 => Key::Digit9,
        K::A => Key::A,
        K::B => Key::B,
        K::C => Key::C,
        K::D => Key::D,
        K::E => Key::E,
        K::F => Key::F,
        K::G => Key::G,
        K::H => Key::H,
        K::I => Key::I,
        K::J => Key::J,
        K::K => Key::K,
        K::L => Key::L,
        K::M => Key::M,
        K::N => Key::N,
        K::O => Key::O,
        K::P => Key::P,
        K::Q => Key::Q,
        K::R => Key::R,
        K::S => Key::S,
        K::T => Key::T,
        K::U => Key::U,
        K::V => Key::V,
        K::W => Key::W,
        K::X => Key::X,
        K::Y => Key::Y,
        K::Z => Key::Z,
        K::F1 => Key::F1,
        K::F2 => Key::F2,
        K::F3 => Key::F3,
        K::F4 => Key::F4,
        K::F5 => Key::F5,
        K::F6 => Key::F6,
        K::F7 => Key::F7,
        K::F8 => Key::F8,
        K::F9 => Key::F9,
        K::F10 => Key::F10,
        K::F11 => Key::F11,
        K::F12 => Key::F12,
        K::F13 => Key::F13,
        K::F14 => Key::F14,
        K::F15 => Key::F15,
        K::F16 => Key::F16,
        K::F17 => Key::F17,
        K::F18 => Key::F18,
        K::F19 => Key::F19,
        K::F20 => Key::F20,
        K::F21 => Key::F21,
        K::F22 => Key::F22,
        K::F23 => Key::F23,
        K::F24 => Key::F24,
        K::MediaPlayPause => Key::MediaPlayPause,
        K::MediaTrackNext => Key::MediaTrackNext,
        K::MediaTrackPrevious => Key::MediaTrackPrevious,
        K::MediaStop => Key::MediaStop,
        K::AudioVolumeMute => Key::AudioMute,
        K::AudioVolumeDown => Key::AudioVolumeDown,
        K::AudioVolumeUp => Key::AudioVolumeUp,
        K::ShiftLeft => Key::ShiftLeft,
        K::ShiftRight => Key::ShiftRight,
        K::ControlLeft => Key::ControlLeft,
        K::ControlRight => Key::ControlRight,
        K::AltLeft => Key::AltLeft,
        K::AltRight => Key::AltRight,
        K::SuperLeft => Key::MetaLeft,
        K::SuperRight => Key::MetaRight,
        K::IntlBackslash => Key::IntlBackslash,
        K::CapsLock => Key::CapsLock,
        K::NumLock => Key::NumLock,
        K::ScrollLock => Key::ScrollLock,
        K::PrintScreen => Key::PrintScreen,
        K::Pause => Key::Pause,
        K::Menu => Key::ContextMenu,
        K::Power => Key::Power,
        K::Sleep => Key::Sleep,
        _ => return None,
    })
}

/// Key combinations offered in the console's Keyboard menu (keys the host would otherwise
/// take for itself).
pub const COMBOS: &[(&str, &[Key])] = &[
    (
        "Ctrl+Alt+Del",
        &[Key::ControlLeft, Key::AltLeft, Key::Delete],
    ),
    (
        "Ctrl+Alt+Backspace",
        &[Key::ControlLeft, Key::AltLeft, Key::Backspace],
    ),
    ("Ctrl+Alt+F1", &[Key::ControlLeft, Key::AltLeft, Key::F1]),
    ("Ctrl+Alt+F2", &[Key::ControlLeft, Key::AltLeft, Key::F2]),
    ("Ctrl+Alt+F7", &[Key::ControlLeft, Key::AltLeft, Key::F7]),
    ("Alt+Tab", &[Key::AltLeft, Key::Tab]),
    ("Alt+F4", &[Key::AltLeft, Key::F4]),
    ("Print Screen", &[Key::PrintScreen]),
    ("Windows key", &[Key::MetaLeft]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_letter_digit_and_function_key_maps() {
        for k in egui::Key::ALL {
            let name = k.name();
            let simple = (name.len() == 1 && name.chars().all(|c| c.is_ascii_alphanumeric()))
                || (name.starts_with('F') && name[1..].parse::<u32>().is_ok_and(|n| n <= 24));
            if simple {
                assert!(pc_key(*k).is_some(), "{name} has no PC key");
            }
        }
        assert_eq!(pc_key(K::ControlRight), Some(Key::ControlRight));
        assert_eq!(pc_key(K::Copy), None);
    }
}
