/**
 * How a PCI function's interrupts leave it: a level-triggered INTx line (PCI 3.0 §2.2.6, shared
 * and wire-ORed between functions) or MSI-X messages (PCI 3.0 §6.8), which are memory writes of
 * `data` to `address` that a VMM turns into an interrupt (KVM_SIGNAL_MSI, an irqfd on an MSI
 * route, an IMSIC write...).
 */

/**
 * A level-triggered interrupt line (INTx as Linux sees it: asserted while the function's ISR is
 * non-zero, dropped when the driver reads the ISR).
 *
 * `setLevel(true)` is called for every interrupt a function raises, also while the line is
 * already asserted, so an edge-triggered consumer (a KVM irqfd, which injects a pulse per write)
 * can inject once per call; a level consumer (a PLIC or IOAPIC model) treats repeats as no-ops.
 * `setLevel(false)` is called once when the line drops.
 */
export interface InterruptLine {
  setLevel(asserted: boolean): void;
}

/**
 * Receives MSI-X messages. `vector` is the function's table index the message came from; a VMM
 * that routes by address/data alone can ignore it.
 */
export interface MsiSink {
  signal(address: bigint, data: number, vector: number): void;
}

/**
 * One platform interrupt input shared by several INTx sources (PCI INTx is wire-ORed): asserted
 * while any source asserts it. Each source gets its own {@link InterruptLine} from
 * {@link source}.
 */
export class SharedInterruptLine {
  readonly #line: InterruptLine;
  readonly #asserted = new Set<number>();
  #nextSource = 0;

  constructor(line: InterruptLine) {
    this.#line = line;
  }

  /** True while at least one source asserts the line. */
  get asserted(): boolean {
    return this.#asserted.size > 0;
  }

  /** A new source driving this line. */
  source(): InterruptLine {
    const id = this.#nextSource++;
    return {
      setLevel: (asserted) => {
        if (asserted) {
          this.#asserted.add(id);
          this.#line.setLevel(true);
        } else if (this.#asserted.delete(id) && this.#asserted.size === 0) {
          this.#line.setLevel(false);
        }
      },
    };
  }
}
