//! The dashboard's entry point, built by Trunk (see `index.html`).

fn main() {
    roundtable_frontend::start();
}
