fn main() -> std::process::ExitCode {
    oomwatch::main()
}
