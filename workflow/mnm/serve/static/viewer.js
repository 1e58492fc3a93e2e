/* MNM slice viewer: three orthogonal slices of a NIfTI map over the MNI template.
 *
 * Written for this page rather than taken from a library: nilearn's view_img (brainsprite)
 * bakes the threshold into pre-rendered sprites on the server (about a second a map, no live
 * threshold), and the WebGL viewers (NiiVue, Papaya) are large bundles that need GPU
 * contexts a headless or remote browser may not have. This file needs nothing but a canvas:
 * it reads .nii/.nii.gz (NIfTI-1, gzip through the browser's DecompressionStream), draws
 * sagittal, coronal and axial slices, moves the cursor on click, and thresholds live.
 * Every map the server sends is on the analysis grid of the run (as is the template).
 */
"use strict";

(function () {
  const NIFTI_TYPES = {
    2: Uint8Array, 4: Int16Array, 8: Int32Array, 16: Float32Array, 64: Float64Array,
    256: Int8Array, 512: Uint16Array, 768: Uint32Array,
  };
  const VIEWS = [
    // name, horizontal axis, vertical axis, fixed axis (voxel axes 0=x, 1=y, 2=z)
    { name: "sagittal", h: 1, v: 2, fixed: 0 },
    { name: "coronal", h: 0, v: 2, fixed: 1 },
    { name: "axial", h: 0, v: 1, fixed: 2 },
  ];
  const PIXELS_PER_VOXEL = 4;

  async function gunzip(buffer) {
    const stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  /** Parse a NIfTI-1 file (ArrayBuffer, gzipped or not) into {dims, data, affine}. */
  async function parseNifti(buffer) {
    const bytes = new Uint8Array(buffer);
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) buffer = await gunzip(buffer);
    const view = new DataView(buffer);
    let little = true;
    if (view.getInt32(0, true) !== 348) {
      if (view.getInt32(0, false) !== 348) throw new Error("not a NIfTI-1 file");
      little = false;
    }
    const dims = [1, 2, 3].map((i) => view.getInt16(40 + 2 * i, little));
    const datatype = view.getInt16(70, little);
    const Type = NIFTI_TYPES[datatype];
    if (!Type) throw new Error("unsupported NIfTI datatype " + datatype);
    const offset = Math.round(view.getFloat32(108, little));
    const slope = view.getFloat32(112, little) || 1;
    const inter = view.getFloat32(116, little) || 0;
    const n = dims[0] * dims[1] * dims[2];
    const width = Type.BYTES_PER_ELEMENT;
    const getters = {
      1: (p) => (Type === Int8Array ? view.getInt8(p) : view.getUint8(p)),
      2: (p) => (Type === Int16Array ? view.getInt16(p, little) : view.getUint16(p, little)),
      4: (p) => (Type === Float32Array ? view.getFloat32(p, little)
        : Type === Int32Array ? view.getInt32(p, little) : view.getUint32(p, little)),
      8: (p) => view.getFloat64(p, little),
    };
    const get = getters[width];
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = get(offset + i * width) * slope + inter;
    let affine;
    if (view.getInt16(254, little) > 0) {
      affine = [280, 296, 312].map((o) => [0, 1, 2, 3].map((c) => view.getFloat32(o + 4 * c, little)));
    } else {
      const pix = [1, 2, 3].map((i) => view.getFloat32(76 + 4 * i, little));
      affine = [[pix[0], 0, 0, 0], [0, pix[1], 0, 0], [0, 0, pix[2], 0]];
    }
    return { dims, data, affine };
  }

  async function loadNifti(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error("could not load " + url + " (HTTP " + response.status + ")");
    return parseNifti(await response.arrayBuffer());
  }

  /** Value at `fraction` of the sorted absolute non-zero values (the threshold). */
  function absQuantiles(data) {
    const values = [];
    for (let i = 0; i < data.length; i++) {
      const v = Math.abs(data[i]);
      if (v > 0 && Number.isFinite(v)) values.push(v);
    }
    return Float32Array.from(values).sort();
  }

  function hot(t) { // t in [0, 1] -> dark red .. yellow .. white
    const s = 0.3 + 0.7 * t;
    return [Math.min(1, 3 * s), Math.min(1, Math.max(0, 3 * s - 1)), Math.min(1, Math.max(0, 3 * s - 2))];
  }
  function cold(t) { // mirror of hot in blues
    const [r, g, b] = hot(t);
    return [b, g, r];
  }

  class SliceViewer {
    /** Build the viewer inside `root` (an empty element). */
    constructor(root) {
      this.root = root;
      root.classList.add("mnm-viewer");
      root.dataset.state = "empty";
      this.canvases = {};
      const views = document.createElement("div");
      views.className = "views";
      for (const spec of VIEWS) {
        const canvas = document.createElement("canvas");
        canvas.className = "slice " + spec.name;
        canvas.title = spec.name + " slice: click to move the cursor";
        canvas.addEventListener("click", (event) => this.onClick(spec, canvas, event));
        views.appendChild(canvas);
        this.canvases[spec.name] = canvas;
      }
      const controls = document.createElement("div");
      controls.className = "controls";
      controls.innerHTML =
        '<label>Threshold <input type="range" class="threshold" min="0" max="99" step="1" value="90"></label>' +
        '<span class="threshold-text"></span>' +
        '<span class="colorbar-box"><span class="low"></span><canvas class="colorbar" width="160" height="12"></canvas><span class="high"></span></span>';
      this.slider = controls.querySelector(".threshold");
      this.slider.addEventListener("input", () => this.render());
      this.thresholdText = controls.querySelector(".threshold-text");
      this.colorbar = controls.querySelector(".colorbar");
      this.colorbarLow = controls.querySelector(".colorbar-box .low");
      this.colorbarHigh = controls.querySelector(".colorbar-box .high");
      this.readout = document.createElement("div");
      this.readout.className = "readout";
      root.append(views, controls, this.readout);
      this.background = null;
      this.overlay = null;
    }

    setBackground(volume) {
      this.background = volume;
      const sorted = absQuantiles(volume.data);
      this.backgroundMax = sorted.length ? sorted[Math.floor(0.99 * (sorted.length - 1))] : 1;
    }

    /** Show `volume` over the template, cursor on its peak (largest absolute value). */
    setOverlay(volume, label) {
      if (this.background && volume.dims.join() !== this.background.dims.join()) {
        throw new Error("map grid " + volume.dims + " differs from the template grid " + this.background.dims);
      }
      this.overlay = volume;
      this.label = label || "";
      this.sorted = absQuantiles(volume.data);
      this.maxAbs = this.sorted.length ? this.sorted[this.sorted.length - 1] : 0;
      this.signed = volume.data.some((v) => v < 0);
      let peak = 0;
      volume.data.forEach((v, i) => { if (Math.abs(v) > Math.abs(volume.data[peak])) peak = i; });
      const [nx, ny] = volume.dims;
      this.cursor = [peak % nx, Math.floor(peak / nx) % ny, Math.floor(peak / (nx * ny))];
      this.render();
      this.root.dataset.state = "ready";
    }

    threshold() {
      if (!this.sorted || !this.sorted.length) return 0;
      const fraction = Number(this.slider.value) / 100;
      return this.sorted[Math.min(this.sorted.length - 1, Math.floor(fraction * this.sorted.length))];
    }

    index(i, j, k) {
      const [nx, ny] = (this.overlay || this.background).dims;
      return i + nx * (j + ny * k);
    }

    world(voxel) {
      const a = (this.overlay || this.background).affine;
      return a.map((row) => row[0] * voxel[0] + row[1] * voxel[1] + row[2] * voxel[2] + row[3]);
    }

    color(value, threshold) {
      if (!(Math.abs(value) >= threshold) || value === 0) return null;
      const span = this.maxAbs - threshold;
      const t = span > 0 ? Math.min(1, (Math.abs(value) - threshold) / span) : 1;
      return value < 0 ? cold(t) : hot(t);
    }

    onClick(spec, canvas, event) {
      if (!this.cursor) return;
      const box = canvas.getBoundingClientRect();
      const dims = (this.overlay || this.background).dims;
      const w = dims[spec.h], h = dims[spec.v];
      const col = Math.floor(((event.clientX - box.left) / box.width) * w);
      const row = Math.floor(((event.clientY - box.top) / box.height) * h);
      const cursor = this.cursor.slice();
      cursor[spec.h] = this.flip(spec.h) ? w - 1 - col : col;
      cursor[spec.v] = this.flip(spec.v) ? row : h - 1 - row;
      this.cursor = cursor.map((c, axis) => Math.max(0, Math.min(dims[axis] - 1, c)));
      this.render();
    }

    /** True when the voxel axis runs against its world axis (negative diagonal term). */
    flip(axis) {
      const a = (this.overlay || this.background).affine;
      return a[axis][axis] < 0;
    }

    render() {
      const volume = this.overlay || this.background;
      if (!volume || !this.cursor) return;
      const threshold = this.threshold();
      for (const spec of VIEWS) this.drawView(spec, volume.dims, threshold);
      this.drawColorbar(threshold);
      const value = this.overlay ? this.overlay.data[this.index(...this.cursor)] : NaN;
      const mm = this.world(this.cursor).map((c) => Math.round(c));
      this.readout.dataset.i = this.cursor[0];
      this.readout.dataset.j = this.cursor[1];
      this.readout.dataset.k = this.cursor[2];
      this.readout.dataset.value = value;
      this.readout.textContent = `${this.label} · MNI x = ${mm[0]}, y = ${mm[1]}, z = ${mm[2]} mm · value ${formatValue(value)}`;
      const shown = Math.round(100 - Number(this.slider.value));
      this.thresholdText.textContent = `|value| ≥ ${formatValue(threshold)} (top ${shown}% of voxels; max ${formatValue(this.maxAbs)})`;
    }

    drawView(spec, dims, threshold) {
      const w = dims[spec.h], h = dims[spec.v];
      const canvas = this.canvases[spec.name];
      if (canvas.width !== w * PIXELS_PER_VOXEL) {
        canvas.width = w * PIXELS_PER_VOXEL;
        canvas.height = h * PIXELS_PER_VOXEL;
      }
      const image = new ImageData(w, h);
      const voxel = this.cursor.slice();
      for (let row = 0; row < h; row++) {
        voxel[spec.v] = this.flip(spec.v) ? row : h - 1 - row;
        for (let col = 0; col < w; col++) {
          voxel[spec.h] = this.flip(spec.h) ? w - 1 - col : col;
          const index = this.index(...voxel);
          const gray = this.background ? Math.min(1, this.background.data[index] / this.backgroundMax) : 0;
          let rgb = [gray, gray, gray];
          const color = this.overlay ? this.color(this.overlay.data[index], threshold) : null;
          if (color) rgb = color.map((c, n) => 0.15 * rgb[n] + 0.85 * c);
          const p = 4 * (row * w + col);
          image.data[p] = 255 * rgb[0];
          image.data[p + 1] = 255 * rgb[1];
          image.data[p + 2] = 255 * rgb[2];
          image.data[p + 3] = 255;
        }
      }
      const small = document.createElement("canvas");
      small.width = w;
      small.height = h;
      small.getContext("2d").putImageData(image, 0, 0);
      const context = canvas.getContext("2d");
      context.imageSmoothingEnabled = false;
      context.drawImage(small, 0, 0, canvas.width, canvas.height);
      const cx = (this.flip(spec.h) ? w - 1 - this.cursor[spec.h] : this.cursor[spec.h]) + 0.5;
      const cy = (this.flip(spec.v) ? this.cursor[spec.v] : h - 1 - this.cursor[spec.v]) + 0.5;
      context.strokeStyle = "rgba(60, 255, 60, 0.85)";
      context.lineWidth = 1;
      context.beginPath();
      context.moveTo(cx * PIXELS_PER_VOXEL, 0);
      context.lineTo(cx * PIXELS_PER_VOXEL, canvas.height);
      context.moveTo(0, cy * PIXELS_PER_VOXEL);
      context.lineTo(canvas.width, cy * PIXELS_PER_VOXEL);
      context.stroke();
    }

    drawColorbar(threshold) {
      const context = this.colorbar.getContext("2d");
      const { width, height } = this.colorbar;
      for (let x = 0; x < width; x++) {
        const t = x / (width - 1);
        const rgb = this.signed ? (t < 0.5 ? cold(1 - 2 * t) : hot(2 * t - 1)) : hot(t);
        context.fillStyle = `rgb(${rgb.map((c) => Math.round(255 * c)).join(",")})`;
        context.fillRect(x, 0, 1, height);
      }
      this.colorbarLow.textContent = formatValue(this.signed ? -this.maxAbs : threshold);
      this.colorbarHigh.textContent = formatValue(this.maxAbs);
      this.colorbar.title = this.signed
        ? `values below -${formatValue(threshold)} in blue, above ${formatValue(threshold)} in red`
        : `values from ${formatValue(threshold)} to ${formatValue(this.maxAbs)}`;
    }
  }

  function formatValue(value) {
    if (!Number.isFinite(value)) return "–";
    if (value === 0) return "0";
    const size = Math.abs(value);
    return size >= 0.01 && size < 1000 ? value.toFixed(3) : value.toExponential(2);
  }

  window.MnmViewer = { SliceViewer, loadNifti, parseNifti, formatValue };
})();
