//! Prints what `media_detect::probe` says about each file named on the command line.
//!
//! `cargo run -p media-detect --example probe -- FILE...`

fn main() {
    let mut status = 0;
    for arg in std::env::args_os().skip(1) {
        match media_detect::probe(std::path::Path::new(&arg)) {
            Ok(m) => println!("{}: {m:#?}", arg.to_string_lossy()),
            Err(e) => {
                println!("{e}");
                status = 1;
            }
        }
    }
    std::process::exit(status);
}
