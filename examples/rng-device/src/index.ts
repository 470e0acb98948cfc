export { RngDevice, rngPlugin } from './device.js';
