import { describe, expect, it, vi } from 'vitest';
import { Poller, pollDelay } from '../../reconciler/loop/poller.ts';
import { CoalescingTrigger, type TriggerBatch } from '../../reconciler/loop/trigger.ts';

/** A pass that records its batches and concurrency, and can be held open until released. */
function recordingPass() {
  const batches: TriggerBatch[] = [];
  let active = 0;
  let maxActive = 0;
  let release: (() => void) | null = null;
  let hold = false;
  const started: Array<() => void> = [];
  const pass = async (batch: TriggerBatch) => {
    batches.push(batch);
    active++;
    maxActive = Math.max(maxActive, active);
    for (const s of started.splice(0)) s();
    if (hold) await new Promise<void>((r) => (release = r));
    active--;
  };
  return {
    pass,
    batches,
    maxActive: () => maxActive,
    holdNext: () => {
      hold = true;
    },
    release: () => {
      hold = false;
      release?.();
    },
    nextStart: () => new Promise<void>((r) => started.push(r)),
  };
}

describe('CoalescingTrigger', () => {
  it('a burst of 20 triggers while idle becomes one pass that sees all 20', async () => {
    const rec = recordingPass();
    const trigger = new CoalescingTrigger(rec.pass);
    for (let i = 0; i < 20; i++) trigger.fire('webhook', `delivery-${i}`);
    await trigger.idle();
    expect(rec.batches).toHaveLength(1);
    expect(rec.batches[0]!.fires).toBe(20);
    expect(rec.batches[0]!.counts).toEqual({ webhook: 20 });
    expect(rec.batches[0]!.details).toHaveLength(8); // bounded
    expect(trigger.stats()).toMatchObject({ fires: 20, passes: 1, coalesced: 19 });
  });

  it('triggers during a pass schedule exactly one more pass; a pass never runs twice at once', async () => {
    const rec = recordingPass();
    const trigger = new CoalescingTrigger(rec.pass);
    rec.holdNext();
    const first = rec.nextStart();
    trigger.fire('poll');
    await first;
    expect(trigger.running).toBe(true);
    for (let i = 0; i < 20; i++) trigger.fire(i % 2 ? 'watch' : 'webhook');
    rec.release();
    await trigger.idle();
    expect(rec.batches.map((b) => b.fires)).toEqual([1, 20]);
    expect(rec.batches[1]!.counts).toEqual({ watch: 10, webhook: 10 });
    expect(rec.maxActive()).toBe(1);
  });

  it('a failing pass is reported, and the trigger keeps working', async () => {
    const errors: unknown[] = [];
    let calls = 0;
    const trigger = new CoalescingTrigger(
      async () => {
        calls++;
        if (calls === 1) throw new Error('git server down');
      },
      { onError: (e) => errors.push(e) },
    );
    trigger.fire('startup');
    await trigger.idle();
    trigger.fire('retry');
    await trigger.idle();
    expect(calls).toBe(2);
    expect(errors.map((e) => (e as Error).message)).toEqual(['git server down']);
    expect(trigger.stats().failures).toBe(1);
  });

  it('stop() lets the running pass end, drops the pending one and ignores later fires', async () => {
    const rec = recordingPass();
    const trigger = new CoalescingTrigger(rec.pass);
    rec.holdNext();
    const first = rec.nextStart();
    trigger.fire('poll');
    await first;
    trigger.fire('poll');
    const stopped = trigger.stop();
    rec.release();
    await stopped;
    trigger.fire('poll');
    await trigger.idle();
    expect(rec.batches).toHaveLength(1);
  });
});

describe('polling with jitter', () => {
  it('waits the interval plus up to 10% by default, 60 s when unset', () => {
    expect(pollDelay({ random: () => 0 })).toBe(60_000);
    expect(pollDelay({ random: () => 0.5 })).toBe(63_000);
    for (let i = 0; i < 1000; i++) {
      const d = pollDelay({ intervalMs: 1000 });
      expect(d).toBeGreaterThanOrEqual(1000);
      expect(d).toBeLessThan(1100);
    }
    expect(pollDelay({ intervalMs: 10_000, jitter: 0.5, random: () => 0.5 })).toBe(12_500);
    expect(() => pollDelay({ intervalMs: 0 })).toThrow(/> 0/);
    expect(() => pollDelay({ jitter: 2 })).toThrow(/between 0 and 1/);
  });

  it('ticks at each jittered delay until stopped', () => {
    vi.useFakeTimers();
    try {
      const draws = [0, 0.5, 0.9];
      let ticks = 0;
      const poller = new Poller(() => ticks++, { intervalMs: 1000, random: () => draws.shift() ?? 0 });
      poller.start();
      vi.advanceTimersByTime(999);
      expect(ticks).toBe(0);
      vi.advanceTimersByTime(1);
      expect(ticks).toBe(1);
      vi.advanceTimersByTime(1049);
      expect(ticks).toBe(1);
      vi.advanceTimersByTime(1);
      expect(ticks).toBe(2);
      vi.advanceTimersByTime(1090);
      expect(ticks).toBe(3);
      poller.stop();
      vi.advanceTimersByTime(10_000);
      expect(ticks).toBe(3);
    } finally {
      vi.useRealTimers();
    }
  });
});
