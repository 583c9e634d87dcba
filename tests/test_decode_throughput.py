from benchmarks.decode_throughput import main_thread, stream, steps


def test_the_decode_benchmark_times_every_step_on_real_files(cells_dir, tiny_model):
    files = sorted(str(p) for p in cells_dir.rglob("*.png"))
    timed = steps(files, 16, "pad")
    assert set(timed) == {"header_us", "load_rgb_us", "fit_square_us", "preprocess_us"} and min(timed.values()) > 0
    rates = stream(files, 16, "pad")
    assert len(rates) == 4 and min(rates.values()) > 0
    from edge_app.sources import decode_stream

    cpu = main_thread(str(tiny_model), list(decode_stream(files, 16, "pad")), threads=1)
    assert cpu["interpreter_threads1_cpu_us"] > 0 and cpu["interpreter_threads1_cells_per_s"] > 0
