/** A one-line progress display on stderr, only when stderr is a terminal. */
export class Progress {
  private last = 0;
  private shown = false;
  constructor(
    private readonly label: string,
    private readonly enabled = process.stderr.isTTY === true,
  ) {}

  update(count: number, unit = "entries"): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    this.shown = true;
    process.stderr.write(`\r\x1b[K${this.label}: ${count} ${unit}`);
  }

  done(): void {
    if (this.shown) process.stderr.write("\r\x1b[K");
    this.shown = false;
  }
}
