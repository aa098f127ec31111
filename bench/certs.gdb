# Who loads the root certificate store at cold start: one backtrace per call.
# python3 bench/cold_start.py --print-env receiver > target/bench/receiver.env
# env -i bash -c 'set -a; . target/bench/receiver.env; exec gdb -q -batch -x bench/certs.gdb target/debug/receiver'
set pagination off
starti
rbreak ^rustls_native_certs::load_native_certs
commands
bt 16
continue
end
continue
