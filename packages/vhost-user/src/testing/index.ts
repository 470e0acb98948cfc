/**
 * @virtkit/vhost-user/testing: a vhost-user front-end written in TypeScript, to test a back-end
 * (and the device behind it) without QEMU: guest RAM in a memfd, rings from core's driver queues,
 * kicks and interrupts through eventfds.
 *
 * @example
 * ```ts
 * import { TestFrontend } from '@virtkit/vhost-user/testing';
 * const frontend = TestFrontend.pair(backend);
 * await frontend.handshake();
 * const queue = await frontend.startQueue(0);
 * const { written } = await queue.send([request], [512]);
 * ```
 *
 * @packageDocumentation
 */

export type {
  FrontendGuestOptions,
  FrontendQueueOptions,
  FrontendResponse,
} from './frontend.js';
export { FrontendGuest, FrontendQueue, TestFrontend } from './frontend.js';
