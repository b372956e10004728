/** An error of the client itself (not of an attempt): `code` says which. */
export class LocksupError extends Error {
  /**
   * @param {string} code e.g. `ERR_LOCKSUP_NOT_FOUND`
   * @param {string} message one line
   * @param {object} [extra] more properties (e.g. `exitCode`, `path`)
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "LocksupError";
    this.code = code;
    Object.assign(this, extra);
  }
}
