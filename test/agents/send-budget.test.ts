import { describe, expect, it } from 'vitest';
import { SendBudget } from '../../reconciler/agents/send-budget.ts';

describe('send budget', () => {
  it('admits while under the limit, then wakes waiters in arrival order as bytes drain; a cancelled one never', () => {
    const budget = new SendBudget(100);
    const woken: string[] = [];
    const waiter = (name: string, bytes: number) => () => {
      woken.push(name);
      budget.take(bytes);
    };
    expect(budget.admit(() => {})).toBe(true);
    budget.take(150);
    const a = waiter('a', 60);
    const b = waiter('b', 60);
    const c = waiter('c', 10);
    expect(budget.admit(a)).toBe(false);
    expect(budget.admit(b)).toBe(false);
    expect(budget.admit(c)).toBe(false);
    budget.release(100);
    expect(woken).toEqual(['a']);
    budget.cancel(b);
    budget.release(60);
    expect(woken).toEqual(['a', 'c']);
    expect(budget.waiting).toBe(0);
    budget.release(60);
    expect(budget.inFlightBytes).toBe(0);
    expect(woken).toEqual(['a', 'c']);
  });
});
