/**
 * The rotation schedule, the same for roots, signing CAs and JWT keys (SPIRE's): the next slot is prepared
 * (and published) at notAfter − min(ttl/2, 30d), becomes the one that signs at notAfter − min(ttl/6, 7d),
 * and stays published until its own notAfter.
 */
import type { SlotState, StoredSlot, StoredState } from './ca-store.ts';
import { DAY_MS } from './settings.ts';

function scheduleOf(slot: { notBefore: string; notAfter: string }): {
  prepareAt: number;
  activateAt: number;
} {
  const notBefore = Date.parse(slot.notBefore);
  const notAfter = Date.parse(slot.notAfter);
  const ttl = notAfter - notBefore;
  return {
    prepareAt: notAfter - Math.min(ttl / 2, 30 * DAY_MS),
    activateAt: notAfter - Math.min(ttl / 6, 7 * DAY_MS),
  };
}

/**
 * Applies one rotation step to a list of slots; `create` makes a new slot (its key already written).
 * `limitMs` caps how long any new slot can live (a signing CA ends with its root): a successor that could not
 * outlive the active slot is not made.
 */
export async function rotateSlots<T extends StoredSlot>(
  slots: T[],
  nowMs: number,
  create: (state: SlotState) => Promise<T>,
  limitMs = Number.POSITIVE_INFINITY,
): Promise<T[]> {
  let list = slots.filter((s) => s.state !== 'old' || Date.parse(s.notAfter) > nowMs);
  const live = (s: T) => Date.parse(s.notAfter) > nowMs;
  let active = list.find((s) => s.state === 'active');
  let prepared = list.find((s) => s.state === 'prepared');
  if (prepared && !live(prepared)) {
    list = list.filter((s) => s !== prepared);
    prepared = undefined;
  }
  if (active && !live(active)) {
    list = list.filter((s) => s !== active);
    active = undefined;
  }
  if (!active) {
    if (prepared) {
      prepared.state = 'active';
      return list;
    }
    return [...list, await create('active')];
  }
  const { prepareAt, activateAt } = scheduleOf(active);
  if (!prepared && nowMs >= prepareAt && Date.parse(active.notAfter) < limitMs) {
    prepared = await create('prepared');
    list = [...list, prepared];
  }
  if (prepared && nowMs >= activateAt) {
    active.state = 'old';
    prepared.state = 'active';
  }
  return list;
}

/** The next rotation step: when it is due (epoch ms, Infinity when nothing is) and what it will do. */
export interface NextStep {
  at: number;
  what: string;
}

/** When the next rotation step is due, and what it is: a prepare, an activation or an expiry, whichever comes first. */
export function nextStep(state: StoredState): NextStep {
  let next: NextStep = { at: Number.POSITIVE_INFINITY, what: 'nothing' };
  const earlier = (at: number, what: string) => {
    if (at < next.at) next = { at, what };
  };
  const consider = (
    kind: string,
    slots: StoredSlot[],
    rotating: boolean,
    limitMs = Number.POSITIVE_INFINITY,
  ) => {
    for (const s of slots) {
      earlier(
        Date.parse(s.notAfter),
        s.state === 'active' ? `${kind} ${s.id} expires` : `expired ${kind} ${s.id} leaves the bundle`,
      );
      if (rotating && s.state === 'active' && Date.parse(s.notAfter) < limitMs) {
        const { prepareAt, activateAt } = scheduleOf(s);
        const prepared = slots.find((p) => p.state === 'prepared');
        if (prepared) earlier(activateAt, `activate the prepared ${kind} ${prepared.id}`);
        else earlier(prepareAt, `prepare the next ${kind}`);
      }
    }
  };
  const activeRoot = state.roots.find((r) => r.state === 'active');
  consider('root', state.roots, !state.roots.some((r) => r.upstream));
  consider('signing CA', state.signingCas, true, activeRoot ? Date.parse(activeRoot.notAfter) : undefined);
  consider('JWT key', state.jwtKeys, true);
  return next;
}

/** When the next rotation step is due (epoch ms). */
export function nextTransition(state: StoredState): number {
  return nextStep(state).at;
}
