//! Generate text from a checkpoint written by the `train` example.
//!
//! ```sh
//! cargo run --release --example generate -- --checkpoint gru.safetensors --prefix 分开 --len 50
//! cargo run --release --example generate -- --checkpoint gru.safetensors --temperature 0.8 --top-k 5
//! cargo run --release --example generate -- --checkpoint gru.safetensors --device cuda
//! ```

use clap::Parser;
use recur::train::generate::{run_generate, GenerateArgs};

fn main() {
    let args = GenerateArgs::parse();
    match run_generate(&args) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
