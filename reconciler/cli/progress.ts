/**
 * Progress of a long command on stderr. On a terminal: one line, redrawn in place (a bar while a transfer
 * runs), replaced by the final word when done. Elsewhere (CI logs, files): one line per step and no transfer
 * ticks, so a cold plan leaves a handful of lines, not one per percent.
 */
import { escapeText } from '../encoding/escape.ts';
import type { CommandIO } from './command.ts';

const BAR_WIDTH = 20;

export class Progress {
  readonly #io: CommandIO;
  readonly #columns: number | undefined;
  #step = '';
  #drawn = false;

  constructor(io: CommandIO) {
    this.#io = io;
    this.#columns = io.stderrTTY?.columns;
  }

  get interactive(): boolean {
    return this.#columns !== undefined;
  }

  /** A new step begins (fetching, rendering head, …). */
  step(text: string): void {
    // Steps name refs, URLs and paths that come from the user and the repository.
    this.#step = escapeText(text);
    if (this.interactive) this.#draw(this.#step);
    else this.#io.stderr(`${this.#step}\n`);
  }

  /** How far the current transfer is; drawn as a bar on a terminal only. `total` 0 when unknown. */
  transfer(phase: string, loaded: number, total: number): void {
    if (!this.interactive) return;
    if (total > 0) {
      const ratio = Math.min(1, loaded / total);
      const filled = Math.round(ratio * BAR_WIDTH);
      this.#draw(
        `${this.#step}: ${escapeText(phase)} [${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${Math.floor(ratio * 100)}%`,
      );
    } else {
      this.#draw(`${this.#step}: ${escapeText(phase)} ${loaded}`);
    }
  }

  /** Clears the terminal line so that a warning or an error starts on a clean line. */
  clear(): void {
    if (this.#drawn) this.#io.stderr('\r\x1b[K');
    this.#drawn = false;
  }

  /** The final line, which stays. */
  done(text: string): void {
    this.clear();
    this.#io.stderr(`${escapeText(text)}\n`);
  }

  #draw(text: string): void {
    const width = Math.max(10, (this.#columns ?? 80) - 1);
    const shown = text.length > width ? `${text.slice(0, width - 1)}…` : text;
    this.#io.stderr(`\r\x1b[K${shown}`);
    this.#drawn = true;
  }
}
