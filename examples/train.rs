//! Train a character-level language model on the Jay Chou lyrics, as the
//! recurrent chapter of Dive into Deep Learning does.
//!
//! ```sh
//! cargo run --release --example train                       # d2l-gru
//! cargo run --release --example train -- --preset d2l-concise-lstm --plot ppl.png
//! cargo run --release --example train -- --help
//! ```

use clap::Parser;
use recur::train::cli::{run_train, TrainArgs};

fn main() {
    let args = TrainArgs::parse();
    if let Err(e) = run_train(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
