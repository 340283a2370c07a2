// Preloaded with `node --import` into the real riptides-cli process by test/e2e/unexpected-failures.test.ts:
// the first write to stdout (or to stderr, with RIPTIDES_TEST_FAULT_STREAM=stderr, for a command that only
// logs) fails in the way RIPTIDES_TEST_FAULT names, as a bug or a broken environment would, somewhere deep in
// a command, after its own error handling had its chance:
//   throw     the write throws (a synchronous exception inside the command)
//   reject    a promise is rejected with nobody waiting for it; the write itself succeeds
//   callback  an exception is thrown from a later callback (as from a socket or timer); the write succeeds
// The error's message has two lines: only the first may reach the user, and no stack without --debug.
const mode = process.env.RIPTIDES_TEST_FAULT;
const stream = process.env.RIPTIDES_TEST_FAULT_STREAM === 'stderr' ? process.stderr : process.stdout;
const write = stream.write.bind(stream);
let fired = false;
stream.write = (...args) => {
  if (!fired) {
    fired = true;
    const err = new TypeError(`injected fault: ${mode}\nsecond line that must not be shown`);
    if (mode === 'throw') throw err;
    if (mode === 'reject') Promise.reject(err);
    if (mode === 'callback')
      setImmediate(() => {
        throw err;
      });
  }
  return write(...args);
};
