// `sqlx::migrate!` embeds the migrations but, on stable Rust, cannot tell Cargo to rebuild when a
// new file appears in the folder: without this, a new migration is silently left out of the
// binary until something else in this crate changes.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
