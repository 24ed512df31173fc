// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title NoxCounter
/// @notice The demonstration target of a private call on a local network: a
///         counter anyone may increment, which records who called it. A call
///         relayed through NoxPool reaches it from the pool's executor, so
///         `lastCaller` shows what the user's address is replaced with.
contract NoxCounter {
    /// @notice Increments so far.
    uint256 public count;
    /// @notice `msg.sender` of the last increment.
    address public lastCaller;

    /// @notice Emitted on every increment.
    event Incremented(address indexed caller, uint256 by, uint256 count);

    /// @notice The call was told to fail.
    error Refused(string reason);

    /// @notice Adds one.
    function increment() external {
        _add(1);
    }

    /// @notice Adds `by`.
    function incrementBy(uint256 by) external {
        _add(by);
    }

    /// @notice Always reverts with `Refused(reason)`: a call whose failure a
    ///         private call must report.
    function fail(string calldata reason) external pure {
        revert Refused(reason);
    }

    function _add(uint256 by) internal {
        count += by;
        lastCaller = msg.sender;
        emit Incremented(msg.sender, by, count);
    }
}
