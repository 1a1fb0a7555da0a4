/**
 * Lists of pages, linked through their descriptors' NEXT and PREV words
 * (descriptor indexes, 0 = none), with the list's head, and for some a tail,
 * in a u32 word of the arena or an owner slot:
 *  - doubly linked: a class's pages with room, the retained pages of each
 *    kind (with a tail: the oldest is released first), the fit pages;
 *  - a stack through NEXT alone: the released pages of each kind.
 * A `tail` of 0 means the list keeps none (word 0 is the arena's magic).
 */

import { Desc } from "./page_layout.ts";

/** Puts page `d` first on the list whose head is at u32 index `head`. */
export function pushFront(u32: Uint32Array, head: number, d: number, tail = 0): void {
  const first = u32[head];
  u32[d + Desc.Prev] = 0;
  u32[d + Desc.Next] = first;
  if (first !== 0) u32[first + Desc.Prev] = d;
  else if (tail !== 0) u32[tail] = d;
  u32[head] = d;
}

/** Puts page `d` right behind page `after` (a list without a tail). */
export function insertAfter(u32: Uint32Array, after: number, d: number): void {
  const next = u32[after + Desc.Next];
  u32[d + Desc.Prev] = after;
  u32[d + Desc.Next] = next;
  if (next !== 0) u32[next + Desc.Prev] = d;
  u32[after + Desc.Next] = d;
}

/** Takes page `d` off the doubly linked list whose head is at u32 index `head`. */
export function unlink(u32: Uint32Array, head: number, d: number, tail = 0): void {
  const prev = u32[d + Desc.Prev];
  const next = u32[d + Desc.Next];
  if (prev !== 0) u32[prev + Desc.Next] = next;
  else u32[head] = next;
  if (next !== 0) u32[next + Desc.Prev] = prev;
  else if (tail !== 0) u32[tail] = prev;
  u32[d + Desc.Next] = 0;
  u32[d + Desc.Prev] = 0;
}

/** Pushes page `d` on the stack whose top is at u32 index `top`. */
export function pushStack(u32: Uint32Array, top: number, d: number): void {
  u32[d + Desc.Next] = u32[top];
  u32[top] = d;
}

/** Pops the stack whose top is at u32 index `top`; 0 if it is empty. */
export function popStack(u32: Uint32Array, top: number): number {
  const d = u32[top];
  if (d !== 0) {
    u32[top] = u32[d + Desc.Next];
    u32[d + Desc.Next] = 0;
  }
  return d;
}
