// The live view's audio thread: microphone samples (float, the context's rate, any channel
// count) → mono → 24 kHz → 16-bit little-endian PCM, posted to the page in chunks of ~100 ms
// with the chunk's level (RMS). Loaded with audioWorklet.addModule from this origin.
//
// When the context already runs at 24 kHz (the browser resampled the microphone), samples pass
// through. Otherwise they are resampled here by linear interpolation; the page puts a low-pass
// filter (BiquadFilterNode) before this node then, so nothing above 12 kHz folds back.

const TARGET_RATE = 24000;
const CHUNK = 2400; // 100 ms at 24 kHz

class PcmProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.position = 0; // where the next output sample lies, in input samples from `previous`
    this.previous = 0; // the last input sample of the block before
    this.out = new DataView(new ArrayBuffer(CHUNK * 2));
    this.filled = 0;
    this.energy = 0;
    this.stopped = false;
    this.port.onmessage = (event) => {
      if (event.data === 'flush') {
        this.post();
        this.port.postMessage({ done: true });
        this.stopped = true;
      }
    };
  }

  push(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.out.setInt16(2 * this.filled, clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff, true);
    this.filled += 1;
    this.energy += clipped * clipped;
    if (this.filled === CHUNK) this.post();
  }

  post() {
    if (!this.filled) return;
    const pcm = this.out.buffer.slice(0, 2 * this.filled);
    const rms = Math.sqrt(this.energy / this.filled);
    this.port.postMessage({ pcm, rms }, [pcm]);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    if (this.stopped) return false;
    const channels = inputs[0];
    if (!channels || !channels.length) return true;
    const frames = channels[0].length;
    const mono = new Float32Array(frames);
    for (const channel of channels) {
      for (let i = 0; i < frames; i += 1) mono[i] += channel[i] / channels.length;
    }
    if (this.step === 1) {
      for (let i = 0; i < frames; i += 1) this.push(mono[i]);
      return true;
    }
    // Output sample k lies at input position `position` (0 = `previous`, 1 = mono[0], …).
    let pos = this.position;
    while (pos <= frames) {
      const at = Math.floor(pos);
      const frac = pos - at;
      const a = at === 0 ? this.previous : mono[at - 1];
      const b = at < frames ? mono[at] : a;
      this.push(a + (b - a) * frac);
      pos += this.step;
    }
    this.position = pos - frames;
    this.previous = mono[frames - 1];
    return true;
  }
}

registerProcessor('hushscribe-pcm', PcmProcessor);
